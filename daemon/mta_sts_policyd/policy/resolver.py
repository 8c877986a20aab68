"""The answer path: RFC 8461 §3.3/§5.1 cache state machine behind every socketmap answer.

Known domains are answered from memory without waiting on the network; DNS and HTTPS work is
the update path's (update.py: per-domain single flight), the daily refetch the proactive
refresh's (refresh.py) and MX freshness for exact wildcards the MX watch's (mx_watch.py).
Remote failures fail open (NOTFOUND) unless an unexpired cached policy applies (RFC 8461
§3.3). "No policy published" is negatively cached for a bounded time; "could not find out"
never removes anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mta_sts_policyd.policy import answer_log
from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache
from mta_sts_policyd.policy.refresh import ProactiveRefresh
from mta_sts_policyd.policy.reply_memo import ReplyMemo
from mta_sts_policyd.policy.stats import LookupStats
from mta_sts_policyd.policy.types import (
    DiscoveryLike,
    FailureListener,
    LookupSettings,
    PolicyListener,
    ResolverContext,
    SharedPolicies,
)
from mta_sts_policyd.policy.update import PolicyUpdater
from mta_sts_policyd.postfix.socketmap import REPLY_NOTFOUND
from mta_sts_policyd.sts.keys import policy_domain_for_key

__all__ = ["DiscoveryLike", "LookupSettings", "PolicyResolver"]

KEY_MEMO_LIMIT = 10_000


class PolicyResolver:
    """Answers `(map name, key)` with a socketmap reply payload."""

    def __init__(
        self,
        discovery: DiscoveryLike,
        cache: PolicyCache,
        settings: LookupSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = ResolverContext(discovery, cache, settings, clock)
        self.cache = cache
        self.clock = clock
        self.stats: LookupStats = self.ctx.stats
        self.updates = PolicyUpdater(self.ctx)
        self.refresher = ProactiveRefresh(self.ctx, self.updates)
        self.memo = ReplyMemo(cache, self.stats, clock, settings.txt_recheck)
        self.on_failure: FailureListener | None = None
        self.on_policy: PolicyListener | None = None
        self._keys: dict[str, str | None] = {}
        self.debug_answers = answer_log.enabled()
        """One DEBUG line per answer (policy/answer_log.py); re-read when logging changes."""

    @property
    def settings(self) -> LookupSettings:
        return self.ctx.settings

    @settings.setter
    def settings(self, settings: LookupSettings) -> None:
        """Reload: every part reads the new settings from the shared context."""
        self.ctx.settings = settings

    @property
    def discovery(self) -> DiscoveryLike:
        return self.ctx.discovery

    @discovery.setter
    def discovery(self, discovery: DiscoveryLike) -> None:
        self.ctx.discovery = discovery

    # --- the answer path -------------------------------------------------------------------

    async def answer(self, name: str, key: str) -> bytes:
        """Reply for one socketmap request; the map name is ignored on purpose (docs/conformance.md:
        PF-socketmap-request)."""
        started = time.perf_counter()
        domain = self._domain(key)
        if domain is None:
            self.stats.notfound_key += 1
            if self.debug_answers:
                self._log_answer(key, None, REPLY_NOTFOUND, None, 0.0)
            return REPLY_NOTFOUND
        now = self.clock()
        entry = self.cache.get(domain)
        if entry is not None and entry.valid(now):
            reply = self._answer_cached(entry, now)
            if not self.debug_answers:  # at DEBUG every answer comes here, to be logged
                self.memo.learn(name, key, entry)
        else:
            reply = await self._answer_uncached(domain, entry, now)
        self.stats.observe(time.perf_counter() - started)
        if self.debug_answers:
            self._log_answer(key, domain, reply, entry, now)
        return reply

    def _log_answer(
        self, key: str, domain: str | None, reply: bytes, before: CacheEntry | None, now: float
    ) -> None:
        if domain is None:
            answer_log.log_answer(key, None, reply, before=None, after=None, now=now,
                                  negative=False, pending=False)  # fmt: skip
            return
        negative = self.updates.no_policy(domain, now)
        dns_failed = self.updates.known_absent(domain, now) and not negative
        answer_log.log_answer(key, domain, reply, before=before, after=self.cache.get(domain),
                              now=now, negative=negative, pending=self.updates.in_flight(domain),
                              dns_failed=dns_failed)  # fmt: skip

    def _domain(self, key: str) -> str | None:
        try:
            return self._keys[key]
        except KeyError:
            if len(self._keys) >= KEY_MEMO_LIMIT:
                self._keys.clear()
            domain = self._keys[key] = policy_domain_for_key(key)
            return domain

    def _answer_cached(self, entry: CacheEntry, now: float) -> bytes:
        self.stats.hits += 1
        entry.last_used = now
        if (
            now - entry.txt_checked_at >= self.ctx.settings.txt_recheck
            and self.updates.may_start_background()
        ):
            self.updates.start(entry.domain, background=True)
        self._notify(entry)
        self.stats.count_reply(entry)
        if not entry.reply:  # never an empty payload, whatever happened to the entry
            self.updates.render(entry)
        return entry.reply

    async def _answer_uncached(self, domain: str, entry: CacheEntry | None, now: float) -> bytes:
        self.stats.misses += 1
        if self.updates.known_absent(domain, now):
            self.stats.notfound_nopolicy += 1
            return REPLY_NOTFOUND
        if entry is not None and self._recently_failed(entry, now):
            self.stats.notfound_nopolicy += 1
            self._notify(entry)  # the failure lasts: it counts for this lookup too (RFC 8461 §6)
            return REPLY_NOTFOUND
        if entry is None and not self.updates.in_flight(domain) and self.cache.maybe_stored(domain):
            entry = await asyncio.to_thread(self.cache.load_from_store, domain)
            if entry is not None:
                self.updates.render(entry)
                self.cache.put(entry, dirty=False)  # unchanged: no write back
                if self.updates.fleet is not None:
                    self.updates.fleet.check_later(domain)  # the fleet may know a newer one
                if entry.valid(now):
                    self.stats.store_hits += 1
                    return self._answer_cached(entry, now)
        task = self.updates.start(domain)
        try:
            result = await asyncio.wait_for(asyncio.shield(task), self.ctx.settings.cold_wait)
        except TimeoutError:
            self.stats.notfound_cold += 1
            return REPLY_NOTFOUND
        return self._answer_discovered(result, now)

    def _answer_discovered(self, result: CacheEntry | None, now: float) -> bytes:
        if result is None or result.policy is None:
            self.stats.notfound_nopolicy += 1
            if result is not None:
                self._notify(result)
            return REPLY_NOTFOUND
        # RFC 8461 §3.2: a max_age 0 policy applies to the lookup that triggered its fetch only.
        if not (result.valid(self.clock()) or result.fetched_at >= now):
            self.stats.notfound_nopolicy += 1
            return REPLY_NOTFOUND
        result.last_used = now
        self._notify(result)
        self.stats.count_reply(result)
        return result.reply or REPLY_NOTFOUND

    def _recently_failed(self, entry: CacheEntry, now: float) -> bool:
        """No policy and checked within txt_recheck: answer now instead of waiting on DNS again.

        Not while a discovery is in flight: its first fetch sets txt_checked_at before the policy
        arrives, and concurrent first lookups must wait for it (RFC 8461 §5.1).
        """
        return (
            entry.policy is None
            and not self.updates.in_flight(entry.domain)
            and now - entry.txt_checked_at < self.ctx.settings.txt_recheck
        )

    def _notify(self, entry: CacheEntry) -> None:
        if entry.failure is not None and self.on_failure is not None:
            self.on_failure(entry, *entry.failure)
        if entry.policy is not None and self.on_policy is not None:
            self.on_policy(entry)

    # --- the other parts, for the service and the control socket -----------------------------

    def render(self, entry: CacheEntry) -> None:
        """Precompute an entry's reply (e.g. one read from the store, whose rows carry none)."""
        self.updates.render(entry)

    def refresh_due(self, entry: CacheEntry, now: float) -> bool:
        return self.refresher.refresh_due(entry, now)

    async def refresh_once(self) -> int:
        return await self.refresher.refresh_once()

    async def recheck_mx_once(self) -> int:
        return await self.updates.mx.recheck_once()

    async def run_refresh_loop(self, tick: float = 60.0) -> None:
        """The background work of a running daemon: daily refetches and MX freshness."""
        await asyncio.gather(self.refresher.run(tick), self.updates.mx.run())

    async def refresh_domain(self, domain: str) -> CacheEntry | None:
        """`cache refresh DOMAIN`: forget back-off and negative state, discover now (in fleet
        mode a real fetch too, whatever the shared tier holds; the other nodes adopt it)."""
        self.updates.forget(domain)
        entry = self.cache.get(domain)
        if entry is not None:
            entry.failed_id, entry.failed_at, entry.policy_id = None, 0.0, None
        if self.updates.fleet is not None:
            self.updates.fleet.forced.add(domain)
        return await self.updates.start(domain)

    def known_absent(self, domain: str) -> bool:
        """The last lookup found no policy (negative-cached), as opposed to a failed lookup."""
        return self.updates.no_policy(domain, self.clock())

    @property
    def shared(self) -> SharedPolicies | None:
        """Fleet mode's shared tier (None on a single host)."""
        return self.ctx.shared

    def attach_shared(self, shared: SharedPolicies) -> None:
        self.updates.attach_shared(shared)

    async def revalidate_shared(self) -> int:
        """Fleet mode: re-read the shared entries whose version changed unseen."""
        return 0 if self.updates.fleet is None else await self.updates.fleet.revalidate()

    async def shared_changed(self, domain: str) -> None:
        """Fleet mode: another node wrote `domain`'s shared entry."""
        if self.updates.fleet is not None:
            await self.updates.fleet.changed(domain)

    async def purge(self, domain: str | None) -> int:
        """`cache purge [DOMAIN]`: forget one domain or everything, in memory and on disk."""
        stored = set(await asyncio.to_thread(self.cache.stored_domains))
        stored -= self.cache.pending_deletions()  # purged before, not yet flushed
        known = {e.domain for e in self.cache.hot_entries()} | stored
        self.updates.forget(domain)
        domains = known if domain is None else {domain} & known
        for name in domains:
            self.cache.remove(name)
        return len(domains)

    def rerender_all(self) -> None:
        """After a reload that changed rendering settings (or the TXT re-check interval)."""
        self.memo.txt_recheck = self.ctx.settings.txt_recheck
        self.memo.clear()
        for entry in self.cache.hot_entries():
            self.updates.render(entry)

    async def wait_idle(self) -> None:
        """Wait for in-flight discoveries (tests, shutdown)."""
        await self.updates.wait_idle()
