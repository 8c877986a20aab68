"""At DEBUG, one `event=answer` line per socketmap answer saying why it is what it is.

Kept apart from the resolver so the answer path only pays a boolean test when DEBUG is off, and
so the reason is stated in one place: which cache tier answered (memory, store on disk, or a
discovery on the network during this lookup), the state the policy was in (mode, id, expiry),
and the failure in force or the negative-cache entry that explains a NOTFOUND.
"""

from __future__ import annotations

import logging

from mta_sts_policyd.policy.entry import CacheEntry

log = logging.getLogger("mta_sts_policyd.policy.answers")


def enabled() -> bool:
    """Whether answers are logged (checked when logging is set up or reloaded, not per answer)."""
    return log.isEnabledFor(logging.DEBUG)


def log_answer(
    key: str,
    domain: str | None,
    reply: bytes,
    *,
    before: CacheEntry | None,
    after: CacheEntry | None,
    now: float,
    negative: bool,
    pending: bool,
    dns_failed: bool = False,
) -> None:
    """`before`: the memory entry when the request came in; `after`: the entry afterwards.
    `negative`: no policy is published (cached); `dns_failed`: the `_mta-sts` lookup failed
    recently, so a NOTFOUND is the failure back-off's, not "no policy" (`failure=dns`)."""
    answer = reply.split(b" ", 1)[0].decode("ascii", "replace")
    key = _field(key)  # the client's bytes: quoted when they could pass for more fields
    if domain is None:
        log.debug("event=answer key=%s reply=%s reason=no-lookup-key", key, answer)
        return
    tier = _tier(before, after, now)
    entry = after or before
    policy = entry.policy if entry is not None else None
    failure = entry.failure if entry is not None else None
    log.debug(
        "event=answer key=%s domain=%s reply=%s tier=%s mode=%s id=%s expires_in=%s "
        "failure=%s negative=%s pending=%s",
        key, domain, answer, tier,
        policy.mode.value if policy is not None else "-",
        entry.policy_id or "-" if entry is not None else "-",
        f"{entry.expires_at - now:.0f}s" if entry is not None and entry.expires_at else "-",
        f"{failure[0].value}:{failure[1]!r}" if failure is not None else
        "dns" if dns_failed else "-",
        "yes" if negative else "no",
        "yes" if pending else "no",
    )  # fmt: skip


def _field(value: str) -> str:
    """A value as it is when it is one plain word (every real key), else quoted (`'a b=c'`),
    so that a key with blanks, `=` or quotes cannot add fields to the line."""
    plain = value and not any(c.isspace() or c in "='\"" for c in value)
    return value if plain else repr(value)


def _tier(before: CacheEntry | None, after: CacheEntry | None, now: float) -> str:
    if before is not None and before.valid(now):
        return "memory"
    if after is not None and after.policy is not None and after.fetched_at < now:
        return "store"  # known before this lookup began, read from disk
    return "network"  # discovered (or failed, or still running) during this lookup
