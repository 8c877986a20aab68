"""The JSON forms of the shared policy cache, and their validation (Redis is a trust boundary).

A shared entry is re-validated like a fetched policy: its policy lines go through the same
parser (sts/policy.py), and the mode, max_age and mx it states must be what those lines say;
the domain must be the key's, the id well-formed, the fetch time not in the future. Anything
else raises SharedValueError and the caller treats the entry as missing. Pure: no clock (the
caller passes `now`), no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from mta_sts_policyd.errors import PolicySyntaxError, ResultType
from mta_sts_policyd.policy.entry import CacheEntry
from mta_sts_policyd.policy.shared_model import SharedFailure, SharedPolicy
from mta_sts_policyd.sts.policy import parse_policy

FORMAT = 1
MAX_SKEW = 300.0
"""Seconds a node's clock may be ahead of this one's: a fetch time further in the future is
refused (it would win every newest-fetch comparison for that long)."""
MAX_VALUE = 64 * 1024
"""Bytes of a shared value at most (a policy file is at most 64 KiB, RFC 8461 §3.3 leaves the
limit to us; ours is discovery's)."""
_ID = re.compile(r"[A-Za-z0-9]{1,32}", re.ASCII)
_NODE = re.compile(r"[\x21-\x7e]{1,255}", re.ASCII)


class SharedValueError(ValueError):
    """A shared value that is not what this daemon writes: ignored like a missing one."""


def encode_policy(entry: CacheEntry, node: str) -> bytes:
    """The shared form of a policy this node fetched (entry.policy and policy_id are set)."""
    policy = entry.policy
    if policy is None or entry.policy_id is None:
        raise ValueError("only an entry with a policy and an id is shared")
    return json.dumps(
        {
            "v": FORMAT,
            "domain": entry.domain,
            "id": entry.policy_id,
            "mode": policy.mode.value,
            "max_age": policy.max_age,
            "mx": list(policy.mx),
            "lines": list(policy.lines),
            "fetched_at": entry.fetched_at,
            "node": node,
        },
        separators=(",", ":"),
    ).encode()


def _document(raw: bytes | str | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if len(raw) > MAX_VALUE:
        raise SharedValueError(f"{what}: {len(raw)} bytes, over {MAX_VALUE}")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise SharedValueError(f"{what}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("v") != FORMAT:
        raise SharedValueError(f"{what}: not a format-{FORMAT} object")
    return data


def _time(data: dict[str, Any], key: str, now: float) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SharedValueError(f"{key} is not a number")
    if value <= 0 or value > now + MAX_SKEW:
        raise SharedValueError(f"{key} {value} is not a time up to now")
    return float(value)


def _policy_id(data: dict[str, Any]) -> str:
    value = data.get("id")
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise SharedValueError(f"id {value!r} is not 1-32 letters and digits (RFC 8461 §3.1)")
    return value


def decode_policy(
    raw: bytes | str | None, domain: str, now: float, version: int = 0
) -> SharedPolicy | None:
    """The validated shared entry of `domain`, None if there is none; SharedValueError if it is
    malformed or forged."""
    data = _document(raw, "policy")
    if data is None:
        return None
    if data.get("domain") != domain:
        raise SharedValueError(f"entry of {data.get('domain')!r} under the key of {domain}")
    lines = data.get("lines")
    if not isinstance(lines, list) or not lines or not all(isinstance(x, str) for x in lines):
        raise SharedValueError("lines is not a list of strings")
    if any("\n" in line or "\r" in line for line in lines):
        raise SharedValueError("a policy line holds a line break")
    try:
        policy = parse_policy("\n".join(lines).encode())
    except PolicySyntaxError as exc:
        raise SharedValueError(f"policy lines do not parse: {exc}") from None
    stated = (data.get("mode"), data.get("max_age"), data.get("mx"))
    if stated != (policy.mode.value, policy.max_age, list(policy.mx)):
        raise SharedValueError(f"mode/max_age/mx {stated!r} differ from the policy lines")
    node = data.get("node")
    if not isinstance(node, str) or not _NODE.fullmatch(node):
        raise SharedValueError("node is not a printable name")
    return SharedPolicy(domain, _policy_id(data), policy, _time(data, "fetched_at", now), version)


def encode_failure(failure: SharedFailure) -> bytes:
    return json.dumps(
        {
            "v": FORMAT,
            "id": failure.policy_id,
            "at": failure.at,
            "result": failure.result_type.value,
            "reason": failure.reason[:500],
        },
        separators=(",", ":"),
    ).encode()


def decode_failure(raw: bytes | str | None, now: float) -> SharedFailure | None:
    data = _document(raw, "failure")
    if data is None:
        return None
    try:
        result = ResultType(str(data.get("result")))
    except ValueError:
        raise SharedValueError(f"result {data.get('result')!r} is no RFC 8460 type") from None
    reason = data.get("reason")
    if not isinstance(reason, str):
        raise SharedValueError("reason is not a string")
    return SharedFailure(_policy_id(data), _time(data, "at", now), result, reason[:500])


def encode_negative(at: float, until: float) -> bytes:
    return json.dumps({"v": FORMAT, "at": at, "until": until}, separators=(",", ":")).encode()


def decode_negative(raw: bytes | str | None, now: float, limit: float) -> float:
    """Until when "no policy published" holds (0.0: no record), at most `limit` after it was
    found, whatever the record says."""
    data = _document(raw, "negative")
    if data is None:
        return 0.0
    at = _time(data, "at", now)
    until = data.get("until")
    if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
        raise SharedValueError("until is not a number")
    return float(min(until, at + limit))
