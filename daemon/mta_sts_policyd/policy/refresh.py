"""Proactive refresh (RFC 8461 §3.3, §10.2; spec A42-A44) as a mixin of PolicyResolver.

Every cached policy in use is refetched about daily (per-domain jitter, bounded concurrency),
before expiry for short max_age values, regardless of the TXT record; failures of non-`none`
policies are logged as warnings by the shared fetch path.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache
from mta_sts_policyd.policy.stats import LookupStats
from mta_sts_policyd.policy.store.sqlite import RefreshFacts
from mta_sts_policyd.policy.types import DiscoveryLike, LookupSettings
from mta_sts_policyd.sts.model import TxtRecord


class ProactiveRefresh:
    discovery: DiscoveryLike
    cache: PolicyCache
    settings: LookupSettings
    clock: Callable[[], float]
    stats: LookupStats
    _refresh_slots: asyncio.Semaphore

    async def _fetch(self, entry: CacheEntry, policy_id: str | None, now: float) -> CacheEntry:
        raise NotImplementedError  # provided by PolicyResolver

    def refresh_due(self, entry: CacheEntry, now: float) -> bool:
        """In use, holding a policy, and older than the refresh interval plus per-domain jitter."""
        if entry.policy is None:
            return False
        facts = RefreshFacts(
            entry.domain, entry.last_used, entry.fetched_at, entry.failed_at, entry.policy.max_age
        )
        return self._due(facts, now)

    def _due(self, facts: RefreshFacts, now: float) -> bool:
        s = self.settings
        if now - facts.last_used > 2 * s.refresh_interval:
            return False
        jitter = zlib.crc32(facts.domain.encode()) % max(1, int(s.refresh_jitter) or 1)
        # A policy whose max_age is shorter than the refresh interval is refreshed before expiry.
        age_limit = min(s.refresh_interval + jitter, 0.75 * facts.max_age)
        return now - facts.fetched_at >= age_limit and now - facts.failed_at >= s.failure_backoff

    async def refresh_once(self) -> int:
        """Refetch every due policy in use, in memory or only in the store (a domain in use can
        be pushed out of the memory set by others); bounded concurrency. Returns how many."""
        now = self.clock()
        due: list[CacheEntry | str] = [
            e for e in self.cache.hot_entries() if self.refresh_due(e, now)
        ]
        interval = self.settings.refresh_interval
        due += await asyncio.to_thread(
            self.cache.stored_due, now - 2 * interval, now, interval, lambda f: self._due(f, now)
        )
        pending = iter(due)  # shared by the workers: no task per domain for a large store

        async def worker() -> None:
            for item in pending:
                entry = item if isinstance(item, CacheEntry) else await self._stored_entry(item)
                if entry is not None:
                    await self._refresh(entry)

        width = max(1, min(self.settings.refresh_concurrency, len(due)))
        await asyncio.gather(*(worker() for _ in range(width)))
        return len(due)

    async def _stored_entry(self, domain: str) -> CacheEntry | None:
        """The entry to refresh for a domain that was only in the store when the pass began."""
        entry = self.cache.get(domain)  # answered (and promoted) meanwhile
        if entry is None:
            entry = await asyncio.to_thread(self.cache.load_from_store, domain)
        return entry if entry is not None and entry.policy is not None else None

    async def _refresh(self, entry: CacheEntry) -> None:
        async with self._refresh_slots:
            self.stats.refresh_active += 1
            self.stats.refresh_peak = max(self.stats.refresh_peak, self.stats.refresh_active)
            try:
                await self._refresh_one(entry)
            finally:
                self.stats.refresh_active -= 1

    async def _refresh_one(self, entry: CacheEntry) -> None:
        now = self.clock()
        policy_id = entry.policy_id
        try:
            lookup = await self.discovery.lookup_txt(entry.domain)
            if isinstance(lookup.result, TxtRecord):
                policy_id = lookup.result.id
        except DnsLookupError:
            pass  # refresh regardless of the TXT record (RFC 8461 §3.3)
        entry.txt_checked_at = now
        failures_before = entry.failed_at
        await self._fetch(entry, policy_id, now)
        if entry.failed_at != failures_before:
            self.stats.refresh_failures += 1

    async def run_refresh_loop(self, tick: float = 60.0) -> None:
        while True:
            await asyncio.sleep(tick)
            if self.settings.refresh:
                await self.refresh_once()
