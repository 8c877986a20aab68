"""Proactive refresh (RFC 8461 §3.3, §10.2): a collaborator of PolicyResolver over the update path.

Every cached policy in use is refetched about daily (per-domain jitter, bounded concurrency),
before expiry for short max_age values, regardless of the TXT record; failures of non-`none`
policies are logged as warnings by the shared fetch path.
"""

from __future__ import annotations

import asyncio
import zlib

from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.policy.store.sqlite import RefreshFacts
from mta_sts_policyd.policy.types import ResolverContext
from mta_sts_policyd.policy.update import PolicyUpdater
from mta_sts_policyd.sts.model import TxtRecord


class ProactiveRefresh:
    """Finds the policies in use that are due and refetches them through the update path."""

    def __init__(self, ctx: ResolverContext, updater: PolicyUpdater) -> None:
        self._ctx = ctx
        self._updater = updater

    def refresh_due(self, entry: CacheEntry, now: float) -> bool:
        """In use, holding a policy, and older than the refresh interval plus per-domain jitter."""
        if entry.policy is None:
            return False
        facts = RefreshFacts(
            entry.domain, entry.last_used, entry.fetched_at, entry.failed_at, entry.policy.max_age
        )
        return self._due(facts, now)

    def _due(self, facts: RefreshFacts, now: float) -> bool:
        s = self._ctx.settings
        if now - facts.last_used > 2 * s.refresh_interval:
            return False
        jitter = zlib.crc32(facts.domain.encode()) % max(1, int(s.refresh_jitter) or 1)
        # A policy whose max_age is shorter than the refresh interval is refreshed before expiry.
        age_limit = min(s.refresh_interval + jitter, 0.75 * facts.max_age)
        return now - facts.fetched_at >= age_limit and now - facts.failed_at >= s.failure_backoff

    async def refresh_once(self) -> int:
        """Refetch every due policy in use, in memory or only in the store (a domain in use can
        be pushed out of the memory set by others); bounded concurrency. Returns how many."""
        ctx = self._ctx
        now = ctx.clock()
        due: list[CacheEntry | str] = [
            e for e in ctx.cache.hot_entries() if self.refresh_due(e, now)
        ]
        interval = ctx.settings.refresh_interval
        due += await asyncio.to_thread(
            ctx.cache.stored_due, now - 2 * interval, now, interval, lambda f: self._due(f, now)
        )
        pending = iter(due)  # shared by the workers: no task per domain for a large store

        async def worker() -> None:
            for item in pending:
                entry = item if isinstance(item, CacheEntry) else await self._stored_entry(item)
                if entry is not None:
                    await self._refresh(entry)

        width = max(1, min(ctx.settings.refresh_concurrency, len(due)))
        await asyncio.gather(*(worker() for _ in range(width)))
        return len(due)

    async def _stored_entry(self, domain: str) -> CacheEntry | None:
        """The entry to refresh for a domain that was only in the store when the pass began."""
        cache = self._ctx.cache
        entry = cache.get(domain)  # answered (and promoted) meanwhile
        if entry is None:
            entry = await asyncio.to_thread(cache.load_from_store, domain)
            if entry is not None:
                self._updater.render(entry)  # store rows carry no reply bytes
        return entry if entry is not None and entry.policy is not None else None

    async def _refresh(self, entry: CacheEntry) -> None:
        stats = self._ctx.stats
        async with self._updater.refresh_slots:
            stats.refresh_active += 1
            stats.refresh_peak = max(stats.refresh_peak, stats.refresh_active)
            try:
                await self._refresh_one(entry)
            finally:
                stats.refresh_active -= 1

    async def _refresh_one(self, entry: CacheEntry) -> None:
        now = self._ctx.clock()
        policy_id = entry.policy_id
        try:
            lookup = await self._ctx.discovery.lookup_txt(entry.domain)
            if isinstance(lookup.result, TxtRecord):
                policy_id = lookup.result.id
        except DnsLookupError:
            pass  # refresh regardless of the TXT record (RFC 8461 §3.3)
        entry.txt_checked_at = now
        failures_before = entry.failed_at
        await self._updater.fetch(entry, policy_id, now)
        if entry.failed_at != failures_before:
            self._ctx.stats.refresh_failures += 1

    async def run(self, tick: float = 60.0) -> None:
        while True:
            await asyncio.sleep(tick)
            if self._ctx.settings.refresh:
                await self.refresh_once()
