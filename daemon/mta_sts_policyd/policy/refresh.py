"""Proactive refresh (RFC 8461 §3.3, §10.2): a collaborator of PolicyResolver over the update path.

Every cached policy in use is refetched about daily (per-domain jitter, bounded concurrency,
refresh_rule.py), before expiry for short max_age values, regardless of the TXT record;
failures of non-`none` policies are logged as warnings by the shared fetch path.

In a fleet (`shared` set, docs/fleet.md "Refresh without a leader") the work comes from the
fleet's shared due-queue instead: this node reports the domains it answered, claims batches of
due domains under a lease and refetches those, so each domain is refreshed once per interval
by the whole fleet. Its own scan then only catches policies the fleet's refresh has not reached
(`slack` late); while Redis cannot be used, the local refresh runs as on a single host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from mta_sts_policyd.errors import DnsLookupError, FleetUnavailable
from mta_sts_policyd.policy import refresh_rule
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.policy.shared_refresh import SharedRefreshQueue
from mta_sts_policyd.policy.store.sqlite import RefreshFacts
from mta_sts_policyd.policy.types import ResolverContext
from mta_sts_policyd.policy.update import PolicyUpdater
from mta_sts_policyd.sts.model import TxtRecord

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProactiveRefresh:
    """Finds the policies in use that are due and refetches them through the update path."""

    def __init__(self, ctx: ResolverContext, updater: PolicyUpdater) -> None:
        self._ctx = ctx
        self._updater = updater
        self.shared: SharedRefreshQueue | None = None
        """The fleet's due-queue (fleet mode), plugged in by the composition root."""
        self._reported_until = 0.0
        self._local_reason: str | None = None
        """Why the fleet's queue is not used now (None: it is); logged once per change."""

    # --- the rule ------------------------------------------------------------------------------

    def refresh_due(self, entry: CacheEntry, now: float) -> bool:
        """In use, holding a policy, and older than the refresh interval plus per-domain jitter."""
        if entry.policy is None:
            return False
        facts = RefreshFacts(
            entry.domain, entry.last_used, entry.fetched_at, entry.failed_at, entry.policy.max_age
        )
        return self._due(facts, now)

    def _due(self, facts: RefreshFacts, now: float, slack: float = 0.0) -> bool:
        if now - facts.last_used > 2 * self._ctx.settings.refresh_interval:
            return False
        return now >= self._due_at(facts.domain, facts.fetched_at, facts.failed_at,
                                   facts.max_age, slack)  # fmt: skip

    def _due_at(
        self,
        domain: str,
        fetched_at: float,
        failed_at: float,
        max_age: float | None,
        slack: float = 0.0,
    ) -> float:
        s = self._ctx.settings
        return refresh_rule.due_at(domain, fetched_at, failed_at, max_age,
                                   interval=s.refresh_interval, spread=s.refresh_jitter,
                                   backoff=s.failure_backoff, slack=slack)  # fmt: skip

    def next_due(self, entry: CacheEntry) -> float:
        """When this entry's next refetch is due (what the fleet's queue is told)."""
        max_age = None if entry.policy is None else entry.policy.max_age
        return self._due_at(entry.domain, entry.fetched_at, entry.failed_at, max_age)

    # --- the local refresh -----------------------------------------------------------------------

    async def refresh_once(self, slack: float = 0.0) -> int:
        """Refetch every due policy in use, in memory or only in the store (a domain in use can
        be pushed out of the memory set by others); bounded concurrency. Returns how many.
        `slack`: only those due that long ago (a fleet's safety net)."""
        ctx = self._ctx
        now = ctx.clock()
        due: list[CacheEntry | str] = [
            e
            for e in ctx.cache.hot_entries()
            if e.policy is not None and self._due(self._facts(e), now, slack)
        ]
        interval = ctx.settings.refresh_interval
        due += await asyncio.to_thread(
            ctx.cache.stored_due, now - 2 * interval, now, interval,
            lambda f: self._due(f, now, slack),
        )  # fmt: skip

        async def one(item: CacheEntry | str) -> None:
            entry = item if isinstance(item, CacheEntry) else await self._stored_entry(item)
            if entry is not None:
                await self._refresh(entry)

        await self._each(due, one)
        return len(due)

    @staticmethod
    def _facts(entry: CacheEntry) -> RefreshFacts:
        max_age = 0 if entry.policy is None else entry.policy.max_age
        return RefreshFacts(entry.domain, entry.last_used, entry.fetched_at, entry.failed_at,
                            max_age)  # fmt: skip

    async def _each(self, items: list[T], work: Callable[[T], Awaitable[None]]) -> None:
        """`work` on every item, a bounded number at a time (the workers share one iterator:
        no task per domain for a large store)."""
        pending = iter(items)

        async def worker() -> None:
            for item in pending:
                await work(item)

        width = max(1, min(self._ctx.settings.refresh_concurrency, len(items)))
        await asyncio.gather(*(worker() for _ in range(width)))

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

    # --- the fleet's refresh -------------------------------------------------------------------

    async def fleet_once(self, queue: SharedRefreshQueue) -> int:
        """One round in a fleet: report what this node answered, refresh what it claims, then
        refresh itself what is late beyond the fleet's slack. Redis unusable: the local refresh.
        Returns how many policies were refreshed (or found fresh) here."""
        try:
            await self._report(queue)
            claimed = await self._work_claims(queue)
        except FleetUnavailable as exc:
            self._use_local(str(exc))
            return await self.refresh_once()
        if self._local_reason is not None:
            log.info("event=fleet-refresh-shared reason='Redis is back: refreshes are claimed"
                     " from the shared queue again'")  # fmt: skip
            self._local_reason = None
        return claimed + await self.refresh_once(slack=queue.slack)

    def _use_local(self, reason: str) -> None:
        if self._local_reason is None:
            log.warning("event=fleet-refresh-local reason=%r this node refreshes the policies it"
                        " uses itself until Redis is back", reason)  # fmt: skip
        self._local_reason = reason

    async def _report(self, queue: SharedRefreshQueue) -> None:
        """The domains answered since the last report that went through (one batch a round,
        never a call per lookup), with when each is due by this node's copy."""
        now = self._ctx.clock()
        since = self._reported_until
        used: dict[str, float] = {}
        due: dict[str, float] = {}
        for entry in self._ctx.cache.hot_entries():
            if entry.policy is not None and entry.last_used > 0 and entry.last_used >= since:
                used[entry.domain] = entry.last_used
                due[entry.domain] = self.next_due(entry)
        if used:
            await queue.report(used, due)
        self._reported_until = now

    async def _work_claims(self, queue: SharedRefreshQueue) -> int:
        """Claim and refresh batches until none is due; each batch's next due times are handed
        back at once. A domain claimed twice in one round (due again at once, e.g. a zero
        failure back-off) waits for the next round."""
        handled: set[str] = set()
        while True:
            claimed = await queue.claim(self._ctx.clock())
            fresh = [d for d in claimed if d not in handled]
            if not fresh:
                if claimed:
                    await queue.done({d: self._ctx.clock() for d in claimed})
                return len(handled)
            handled.update(fresh)
            await queue.done(await self._refresh_claimed(fresh))

    async def _refresh_claimed(self, domains: Iterable[str]) -> dict[str, float]:
        now = self._ctx.clock()
        due: dict[str, float] = {}

        async def one(domain: str) -> None:
            entry = await self._claimed_entry(domain)
            if entry.policy is None or self.next_due(entry) <= now:
                await self._refresh_claimed_entry(entry)
            # else refetched meanwhile, here or elsewhere: only rescheduled
            due[domain] = self.next_due(entry)

        await self._each(list(domains), one)
        return due

    async def _claimed_entry(self, domain: str) -> CacheEntry:
        """This node's entry (memory or store), else a new one, which the update path fills
        (in a fleet from the shared cache's copy when that is newer, else by a fetch) and puts
        in the cache: a claimed domain is refreshed whichever node answered it."""
        entry = await self._stored_entry(domain)
        return entry if entry is not None else CacheEntry(domain)

    async def _refresh_claimed_entry(self, entry: CacheEntry) -> None:
        """Refresh; in a fleet the update path may adopt the shared copy instead of fetching
        (another node's newer fetch). A copy that is itself due was only a step: once more,
        which then fetches (the shared copy is no newer than this one any more)."""
        started = self._ctx.clock()
        before = entry.fetched_at
        await self._refresh(entry)
        adopted = entry.fetched_at != before and entry.fetched_at < started
        if adopted and self.next_due(entry) <= self._ctx.clock():
            await self._refresh(entry)

    async def run(self, tick: float = 60.0) -> None:
        while True:
            await asyncio.sleep(tick)
            if self._ctx.settings.refresh:
                try:
                    await self.tick()
                except Exception:  # a bug in one round must not end the refresh for good
                    log.exception("event=refresh-round-failed")

    async def tick(self) -> int:
        """One round of the refresh loop."""
        queue = self.shared
        return await (self.refresh_once() if queue is None else self.fleet_once(queue))
