"""What the daemon knows about one policy domain, and its JSON form in the store (never pickle)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.sts.model import Mode, Policy

STORE_FORMAT = 1


@dataclass(slots=True, eq=False)
class CacheEntry:
    """What the daemon knows about one policy domain (RFC 8461 §5.1 state)."""

    domain: str
    policy_id: str | None = None
    policy: Policy | None = None
    fetched_at: float = 0.0
    """Last successful HTTPS fetch; the lifetime counts from here (RFC 8461 §5.1)."""
    expires_at: float = 0.0
    txt_checked_at: float = 0.0
    last_used: float = 0.0
    failed_id: str | None = None
    failed_at: float = 0.0
    failure: tuple[ResultType, str] | None = None
    """The discovery failure in force (cleared by the next success); TLS-RPT, `cache show`."""
    mx_hosts: tuple[str, ...] = ()
    mx_checked_at: float = 0.0
    """When `mx_hosts` was read from DNS; 0.0: no MX data (never asked, or the lookup failed)."""
    mx_ttl: float = 0.0
    """The TTL of that MX answer: exact wildcards re-read the MX set when it has run out."""
    dane: bool = False
    """An MX host has DNSSEC-validated TLSA records (RFC 8461 §2: DANE takes precedence)."""
    reply: bytes = field(default=b"", repr=False)
    """Precomputed socketmap reply payload; rendered when the policy or MX set changes."""
    origin: str = ""
    """Where the policy came from since this process started: "fetched" (by this node),
    "redis" (adopted from the fleet), "" (read from the store). `cache show` says it."""

    def valid(self, now: float) -> bool:
        return self.policy is not None and now < self.expires_at


def entry_to_json(entry: CacheEntry) -> dict[str, Any]:
    policy = entry.policy
    return {
        "v": STORE_FORMAT,
        "id": entry.policy_id,
        "policy": None
        if policy is None
        else {
            "mode": policy.mode.value,
            "max_age": policy.max_age,
            "mx": list(policy.mx),
            "lines": list(policy.lines),
        },
        "fetched_at": entry.fetched_at,
        "expires_at": entry.expires_at,
        "txt_checked_at": entry.txt_checked_at,
        "last_used": entry.last_used,
        "failed_id": entry.failed_id,
        "failed_at": entry.failed_at,
        "failure": None if entry.failure is None else [entry.failure[0].value, entry.failure[1]],
        "mx_hosts": list(entry.mx_hosts),
        "mx_checked_at": entry.mx_checked_at,
        "mx_ttl": entry.mx_ttl,
        "dane": entry.dane,
    }


def entry_from_json(domain: str, data: dict[str, Any]) -> CacheEntry:
    """Rebuild an entry; raise ValueError/KeyError/TypeError on anything malformed."""
    if data.get("v") != STORE_FORMAT:
        raise ValueError(f"unknown store format {data.get('v')!r}")
    raw = data["policy"]
    policy = None
    if raw is not None:
        policy = Policy(
            mode=Mode(raw["mode"]),
            max_age=int(raw["max_age"]),
            mx=tuple(str(m) for m in raw["mx"]),
            lines=tuple(sys.intern(str(line)) for line in raw["lines"]),
        )
    failure = data["failure"]
    return CacheEntry(
        domain=domain,
        policy_id=data["id"],
        policy=policy,
        fetched_at=float(data["fetched_at"]),
        expires_at=float(data["expires_at"]),
        txt_checked_at=float(data["txt_checked_at"]),
        last_used=float(data["last_used"]),
        failed_id=data["failed_id"],
        failed_at=float(data["failed_at"]),
        failure=None if failure is None else (ResultType(failure[0]), str(failure[1])),
        mx_hosts=tuple(str(h) for h in data["mx_hosts"]),
        mx_checked_at=float(data.get("mx_checked_at", 0.0)),
        mx_ttl=float(data.get("mx_ttl", 0.0)),
        dane=bool(data.get("dane", False)),
    )
