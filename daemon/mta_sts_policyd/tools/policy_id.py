"""Policy ids derived from the policy's canonical content (used by `generate` and `check`).

Why: RFC 8461 §3.1 makes senders re-fetch a policy only when the TXT id changes, and a
forgotten id bump is the commonest way a policy change never reaches senders. An id computed
from the content changes exactly when the policy does, and `check` can prove a missed bump.

The id is `mspd1` (scheme and version marker) followed by the first 27 hex digits of the
SHA-256 of the canonical text: 32 characters, within the 1-32 alphanumerics of the TXT `id`.
The canonical text is one `key: value` line per effective field, LF-terminated, in this order:
`version`, `mode`, `max_age` (as a decimal number without leading zeros, unclamped), every
distinct `mx` pattern lower-cased and sorted, then the extension lines in sorted order. Line
ends, blank lines, a BOM, surrounding whitespace, field order, repeated `mx` lines and ignored
duplicate keys do not change the id, because they do not change what a sender applies. Pure.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum

from mta_sts_policyd.sts.model import Policy

ID_PREFIX = "mspd1"
_DIGEST_CHARS = 32 - len(ID_PREFIX)
_DERIVED = re.compile(f"{ID_PREFIX}[0-9a-f]{{{_DIGEST_CHARS}}}", re.ASCII)
_CORE = ("version", "mode", "max_age", "mx")


def canonical_policy(policy: Policy) -> str:
    """The text the id is computed from (see the module docstring for the rules)."""
    fields = [line.partition(":") for line in policy.lines]
    values = {key: value.strip() for key, _, value in reversed(fields)}  # first occurrence wins
    max_age = values.get("max_age", str(policy.max_age))
    lines = [
        f"version: {policy.version}",
        f"mode: {policy.mode}",
        f"max_age: {int(max_age) if max_age.isdigit() else policy.max_age}",
    ]
    lines += [f"mx: {pattern}" for pattern in sorted({p.lower() for p in policy.mx})]
    extensions = {f"{key}: {value.strip()}" for key, _, value in fields if key not in _CORE}
    lines += sorted(extensions)
    return "".join(f"{line}\n" for line in lines)


def policy_id(policy: Policy) -> str:
    """The derived id of `policy`: same effective policy, same id; any change, a new id."""
    digest = hashlib.sha256(canonical_policy(policy).encode("utf-8")).hexdigest()
    return ID_PREFIX + digest[:_DIGEST_CHARS]


def is_derived_id(txt_id: str) -> bool:
    """True when `txt_id` has the form `policy_id` produces (the domain uses this scheme)."""
    return _DERIVED.fullmatch(txt_id) is not None


class IdVerdict(StrEnum):
    MATCHES = "matches"
    """The id is derived and equals the served policy's derived id."""
    NOT_BUMPED = "not-bumped"
    """The id is derived but from other content: the policy changed, the id did not."""
    NOT_VERIFIABLE = "not-verifiable"
    """The id was not made by this scheme: nothing can be concluded."""


def judge_id(txt_id: str, served: Policy) -> IdVerdict:
    if not is_derived_id(txt_id):
        return IdVerdict.NOT_VERIFIABLE
    return IdVerdict.MATCHES if txt_id == policy_id(served) else IdVerdict.NOT_BUMPED
