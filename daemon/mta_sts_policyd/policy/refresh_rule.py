"""When a policy in use is due for its proactive refetch (RFC 8461 §3.3, §10.2): one rule for
the local refresh and for the shared queue of a fleet, so a domain is due at the same moment
whichever node computes it. Pure: no clock, no I/O.
"""

from __future__ import annotations

import zlib

EARLY_SHARE = 0.75
"""A policy whose max_age is shorter than the refresh interval is refreshed at this share of
its lifetime, before it expires."""
LATE_SHARE = 0.9
"""In a fleet, a node refreshes a policy itself at the latest at this share of its lifetime,
whether or not the fleet's refresh has reached it."""


def jitter(domain: str, spread: float) -> int:
    """Per-domain delay in [0, spread) seconds, the same on every node and every run (CRC-32 of
    the name), so the refreshes of many domains fetched together spread out."""
    return zlib.crc32(domain.encode()) % max(1, int(spread) or 1)


def age_limit(
    domain: str, max_age: float | None, interval: float, spread: float, slack: float = 0.0
) -> float:
    """How old a fetched policy may get before it is refetched. `slack` (a fleet's safety net)
    moves the interval-based limit later, but never past LATE_SHARE of the lifetime.
    `max_age` None: no policy known yet, the interval rule alone."""
    limit = interval + jitter(domain, spread)
    if max_age is None:
        return limit + slack
    if slack:
        return min(limit + slack, LATE_SHARE * max_age)
    return min(limit, EARLY_SHARE * max_age)


def due_at(
    domain: str,
    fetched_at: float,
    failed_at: float,
    max_age: float | None,
    *,
    interval: float,
    spread: float,
    backoff: float,
    slack: float = 0.0,
) -> float:
    """The moment the next refetch is due: the policy's age limit after its last fetch, and
    not before `backoff` after the last failed attempt (RFC 8461 §3.3)."""
    return max(
        fetched_at + age_limit(domain, max_age, interval, spread, slack), failed_at + backoff
    )
