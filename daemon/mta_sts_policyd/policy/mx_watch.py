"""Exact wildcards (RFC 8461 §4.1): the MX set that `*.x` patterns are narrowed to, kept fresh.

Why: Postfix's `.x` match form accepts a certificate name any number of labels deep, the RFC's
`*.x` exactly one. So the reply names the MX hosts a wildcard matches (postfix/policy_reply.py),
and those names must follow the domain's DNS: an MX moved within the wildcard must be accepted
as soon as the daemon can know of the move, and a too-deep MX stays refused. The MX set of every
enforce domain with a wildcard that is in use is therefore re-read when its TTL has run out (at
most every `MX_RECHECK_FLOOR` seconds, at least every `txt_recheck`), by a loop with a `TICK`,
so no answer waits on DNS for it. Without MX data (a lookup failure of any kind) the reply falls
back to `.x`: remote trouble fails open (RFC 8461 §3.3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.policy.types import LookupSettings, MxQuestion, ResolverContext
from mta_sts_policyd.sts.model import Mode

log = logging.getLogger(__name__)

MX_RECHECK_FLOOR = 10.0
"""Shortest interval between two reads of one domain's MX set (a TTL of 0 is not a reason to
ask on every answer)."""
TICK = 5.0
"""How often the watch looks for MX data that has run out."""


def wants_mx(entry: CacheEntry, settings: LookupSettings) -> bool:
    """An enforce policy with a `*.` pattern, and exact wildcards on: the reply uses MX names."""
    policy = entry.policy
    return (
        settings.exact_wildcards
        and policy is not None
        and policy.mode is Mode.ENFORCE
        and any(p.startswith("*.") for p in policy.mx)
    )


def mx_fresh_until(entry: CacheEntry, settings: LookupSettings) -> float:
    """When the entry's MX data must be read again (0.0 when it has none)."""
    if not entry.mx_checked_at:
        return 0.0
    lifetime = min(max(entry.mx_ttl, MX_RECHECK_FLOOR), max(settings.txt_recheck, 1.0))
    return entry.mx_checked_at + lifetime


class MxWatch:
    """Reads MX sets for the update path and re-reads the stale ones of wildcard domains."""

    def __init__(self, ctx: ResolverContext, render: Callable[[CacheEntry], None]) -> None:
        self._ctx = ctx
        self._render = render
        self._watched: dict[str, None] = {}

    def watch(self, entry: CacheEntry) -> None:
        """Called for every rendered entry: remember the ones whose reply depends on MX data."""
        if wants_mx(entry, self._ctx.settings):
            self._watched[entry.domain] = None

    async def read(
        self, domain: str, asked: MxQuestion | None = None
    ) -> tuple[tuple[str, ...], float] | None:
        """(MX hosts, TTL), or None when the lookup failed in any way (never raises).
        `asked`: the question was asked already (its answer is read, not asked again)."""
        try:
            if asked is not None:
                lookup = await asked.mx()
            else:
                lookup = await self._ctx.discovery.lookup_mx_ttl(domain)
        except Exception as exc:  # any failure means "no MX data": the `.x` form, fail-open
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            log.info("event=mx-lookup-failed domain=%s reason=%r", domain, reason)
            return None
        return lookup.hosts, float(lookup.ttl)

    @staticmethod
    def apply(entry: CacheEntry, mx: tuple[tuple[str, ...], float] | None, now: float) -> None:
        if mx is None:
            entry.mx_hosts, entry.mx_checked_at, entry.mx_ttl = (), 0.0, 0.0
        else:
            entry.mx_hosts, entry.mx_ttl = mx
            entry.mx_checked_at = now

    def stale(self, now: float) -> list[str]:
        """Watched domains in use whose MX data has run out; forgets those no longer watched."""
        settings, hot = self._ctx.settings, self._ctx.cache.hot_set
        due = []
        for domain in list(self._watched):
            entry = hot.get(domain)  # not cache.get: looking must not reorder the LRU
            if entry is None or not wants_mx(entry, settings):
                del self._watched[domain]
            elif (
                now >= mx_fresh_until(entry, settings)
                and now - entry.last_used < settings.refresh_interval
            ):
                due.append(domain)
        return due

    async def recheck_once(self) -> int:
        """Re-read every stale MX set now, `refresh_concurrency` at a time; how many."""
        due = self.stale(self._ctx.clock())
        pending = iter(due)  # shared by the workers: no task per domain

        async def worker() -> None:
            for domain in pending:
                await self._recheck(domain)

        width = max(1, min(self._ctx.settings.refresh_concurrency, len(due)))
        await asyncio.gather(*(worker() for _ in range(width)))
        return len(due)

    async def _recheck(self, domain: str) -> None:
        mx = await self.read(domain)
        now = self._ctx.clock()
        entry = self._ctx.cache.hot_set.get(domain)
        if entry is None or not wants_mx(entry, self._ctx.settings):
            return
        before = (entry.mx_hosts, bool(entry.mx_checked_at))
        self.apply(entry, mx, now)
        self._ctx.cache.mark_dirty(entry)
        if (entry.mx_hosts, bool(entry.mx_checked_at)) != before:
            log.info(
                "event=mx-changed domain=%s mx=%s",
                domain,
                ",".join(entry.mx_hosts) if mx is not None else "(unknown)",
            )
            self._render(entry)  # a new reply object: the reply memo drops the old one

    async def run(self, tick: float = TICK) -> None:
        while True:
            await asyncio.sleep(tick)
            try:
                await self.recheck_once()
            except Exception:  # a bug must not end the watch
                log.exception("event=mx-watch-crashed")
