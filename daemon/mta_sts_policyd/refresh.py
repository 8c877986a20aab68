"""Proactive refresh (RFC 8461 §3.3, §10.2; spec A42-A44) as a mixin of PolicyResolver.

Every cached policy in use is refetched about daily (per-domain jitter, bounded concurrency),
before expiry for short max_age values, regardless of the TXT record; failures of non-`none`
policies are logged as warnings by the shared fetch path.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

from mta_sts_policyd.cache import CacheEntry, PolicyCache
from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.lookup_stats import LookupStats
from mta_sts_policyd.lookup_types import DiscoveryLike, LookupSettings
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
        s = self.settings
        if entry.policy is None or now - entry.last_used > 2 * s.refresh_interval:
            return False
        jitter = zlib.crc32(entry.domain.encode()) % max(1, int(s.refresh_jitter) or 1)
        # A policy whose max_age is shorter than the refresh interval is refreshed before expiry.
        age_limit = min(s.refresh_interval + jitter, 0.75 * entry.policy.max_age)
        return now - entry.fetched_at >= age_limit and now - entry.failed_at >= s.failure_backoff

    async def refresh_once(self) -> int:
        """Refetch every due policy with bounded concurrency; returns how many were attempted."""
        now = self.clock()
        due = [e for e in self.cache.hot_entries() if self.refresh_due(e, now)]
        await asyncio.gather(*(self._refresh(e) for e in due))
        return len(due)

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
