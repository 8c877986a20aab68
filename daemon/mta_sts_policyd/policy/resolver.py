"""The brain: RFC 8461 §3.3/§5.1 cache state machine behind every socketmap answer.

Known domains are answered from memory without waiting on the network; DNS and HTTPS work runs
in per-domain single-flight tasks. Remote failures fail open (NOTFOUND) unless an unexpired
cached policy applies (A28/A29). "No policy published" is negatively cached for a bounded time;
"could not find out" never removes anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mta_sts_policyd.errors import DnsLookupError, PolicyFetchError
from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache
from mta_sts_policyd.policy.refresh import ProactiveRefresh
from mta_sts_policyd.policy.reply_memo import ReplyMemo
from mta_sts_policyd.policy.stats import LookupStats
from mta_sts_policyd.policy.types import (
    DiscoveryLike,
    FailureListener,
    LookupSettings,
    PolicyListener,
)
from mta_sts_policyd.postfix.policy_reply import render_policy_reply
from mta_sts_policyd.postfix.socketmap import REPLY_NOTFOUND
from mta_sts_policyd.sts.keys import policy_domain_for_key
from mta_sts_policyd.sts.model import Mode, TxtAbsent, TxtRecord

if TYPE_CHECKING:
    from mta_sts_policyd.discovery.client import TxtLookup

__all__ = ["DiscoveryLike", "LookupSettings", "PolicyResolver"]

log = logging.getLogger(__name__)

KEY_MEMO_LIMIT = 10_000
BACKGROUND_LIMIT = 1_000
"""Queued background re-checks at most; beyond it a due re-check waits for a later lookup
(after a restart on a large store every domain is due at once: no task per domain)."""


class PolicyResolver(ProactiveRefresh):
    """Answers `(map name, key)` with a socketmap reply payload."""

    def __init__(
        self,
        discovery: DiscoveryLike,
        cache: PolicyCache,
        settings: LookupSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.discovery = discovery
        self.cache = cache
        self.settings = settings
        self.clock = clock
        self.stats = LookupStats()
        self.memo = ReplyMemo(cache, self.stats, clock, settings.txt_recheck)
        self.on_failure: FailureListener | None = None
        self.on_policy: PolicyListener | None = None
        self._keys: dict[str, str | None] = {}
        self._negative: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[CacheEntry | None]] = {}
        self._background = 0
        self._refresh_slots = asyncio.Semaphore(settings.refresh_concurrency)

    # --- the answer path -------------------------------------------------------------------

    async def answer(self, name: str, key: str) -> bytes:
        """Reply for one socketmap request; the map name is ignored on purpose (D.53)."""
        started = time.perf_counter()
        domain = self._domain(key)
        if domain is None:
            self.stats.notfound_key += 1
            return REPLY_NOTFOUND
        now = self.clock()
        entry = self.cache.get(domain)
        if entry is not None and entry.valid(now):
            reply = self._answer_cached(entry, now)
            self.memo.learn(name, key, entry)
        else:
            reply = await self._answer_uncached(domain, entry, now)
        self.stats.observe(time.perf_counter() - started)
        return reply

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
            now - entry.txt_checked_at >= self.settings.txt_recheck
            and self._background < BACKGROUND_LIMIT
        ):
            self._start_discovery(entry.domain, background=True)
        self._notify(entry)
        self.stats.count_reply(entry)
        return entry.reply

    async def _answer_uncached(self, domain: str, entry: CacheEntry | None, now: float) -> bytes:
        self.stats.misses += 1
        if self._negative.get(domain, 0.0) > now:
            self.stats.notfound_nopolicy += 1
            return REPLY_NOTFOUND
        if entry is not None and self._recently_failed(entry, now):
            self.stats.notfound_nopolicy += 1
            self._notify(entry)  # the failure lasts: it counts for this lookup too (RFC 8461 §6)
            return REPLY_NOTFOUND
        if entry is None and domain not in self._inflight and self.cache.maybe_stored(domain):
            entry = await asyncio.to_thread(self.cache.load_from_store, domain)
            if entry is not None:
                self.render(entry)
                self.cache.put(entry, dirty=False)  # unchanged: no write back
                if entry.valid(now):
                    return self._answer_cached(entry, now)
        task = self._start_discovery(domain)
        try:
            result = await asyncio.wait_for(asyncio.shield(task), self.settings.cold_wait)
        except TimeoutError:
            self.stats.notfound_cold += 1
            return REPLY_NOTFOUND
        if result is None or result.policy is None:
            self.stats.notfound_nopolicy += 1
            if result is not None:
                self._notify(result)
            return REPLY_NOTFOUND
        # A36: a max_age 0 policy applies to the lookup that triggered its fetch only.
        if not (result.valid(self.clock()) or result.fetched_at >= now):
            self.stats.notfound_nopolicy += 1
            return REPLY_NOTFOUND
        result.last_used = now
        self._notify(result)
        self.stats.count_reply(result)
        return result.reply

    def _recently_failed(self, entry: CacheEntry | None, now: float) -> bool:
        """No policy and checked within txt_recheck: answer now instead of waiting on DNS again.

        Not while a discovery is in flight: its first fetch sets txt_checked_at before the policy
        arrives, and concurrent first lookups must wait for it (D.50, D.51).
        """
        return (
            entry is not None
            and entry.policy is None
            and entry.domain not in self._inflight
            and now - entry.txt_checked_at < self.settings.txt_recheck
        )

    def _notify(self, entry: CacheEntry) -> None:
        if entry.failure is not None and self.on_failure is not None:
            self.on_failure(entry, *entry.failure)
        if entry.policy is not None and self.on_policy is not None:
            self.on_policy(entry)

    # --- discovery (single flight per domain) -----------------------------------------------

    def _start_discovery(
        self, domain: str, *, background: bool = False
    ) -> asyncio.Task[CacheEntry | None]:
        """Single flight per domain. Background re-checks (the domain has a valid policy, no
        one waits) share the refresh concurrency bound, so a burst of new TXT ids cannot open
        thousands of fetches at once; cold lookups, which Postfix waits for, are not queued."""
        task = self._inflight.get(domain)
        if task is None:
            work = self._discover_bounded(domain) if background else self._discover(domain)
            task = asyncio.create_task(work, name=f"discover {domain}")
            if background:  # counted from creation: a burst in one loop turn sees it
                self._background += 1
                task.add_done_callback(self._background_done)
            self._inflight[domain] = task
            task.add_done_callback(lambda _t: self._inflight.pop(domain, None))
        return task

    async def _discover_bounded(self, domain: str) -> CacheEntry | None:
        async with self._refresh_slots:
            return await self._discover(domain)

    def _background_done(self, _task: asyncio.Task[CacheEntry | None]) -> None:
        self._background -= 1

    async def _discover(self, domain: str) -> CacheEntry | None:
        """One TXT check and, when needed, one fetch. Never raises: failures are state."""
        try:
            return await self._check_txt(domain)
        except Exception:  # a bug must not poison the single-flight slot
            log.exception("event=discovery-crashed domain=%s", domain)
            return self.cache.get(domain)

    async def _check_txt(self, domain: str) -> CacheEntry | None:
        now = self.clock()
        entry = self.cache.get(domain)
        try:
            lookup = await self.discovery.lookup_txt(domain)
        except DnsLookupError as exc:
            log.info("event=txt-lookup-failed domain=%s reason=%r", domain, exc.reason)
            self.stats.txt_failures += 1
            if entry is not None:
                entry.txt_checked_at = now
            return entry
        record = lookup.result
        if not isinstance(record, TxtRecord):
            return self._no_live_policy(domain, entry, now, lookup)
        self._negative.pop(domain, None)
        if entry is None:
            entry = CacheEntry(domain=domain, last_used=now)
            self.cache.put(entry)
        entry.txt_checked_at = now
        self.cache.mark_dirty(entry)
        if entry.valid(now) and entry.policy_id == record.id:
            entry.failure = None  # e.g. a failed fetch for an id that was withdrawn again
            return entry
        if entry.failed_id == record.id and now - entry.failed_at < self.settings.failure_backoff:
            return entry  # A27: at most one attempt per id every failure_backoff seconds
        return await self._fetch(entry, record.id, now)

    def _no_live_policy(
        self, domain: str, entry: CacheEntry | None, now: float, lookup: TxtLookup
    ) -> CacheEntry | None:
        """A11/A12: no usable TXT record; an unexpired cached policy still applies."""
        reason = lookup.result.reason if not isinstance(lookup.result, TxtRecord) else ""
        if not isinstance(lookup.result, TxtAbsent):
            log.info("event=txt-invalid domain=%s reason=%r", domain, reason)
        if entry is not None:
            entry.txt_checked_at = now
            self.cache.mark_dirty(entry)
            if entry.valid(now):
                return entry
        ttl = min(self.settings.negative_ttl, max(float(lookup.ttl), 30.0))
        self._negative[domain] = now + ttl
        if len(self._negative) > KEY_MEMO_LIMIT:
            self._prune_negative(now)
        return entry

    def _prune_negative(self, now: float) -> None:
        self._negative = {d: t for d, t in self._negative.items() if t > now}

    async def _fetch(self, entry: CacheEntry, policy_id: str | None, now: float) -> CacheEntry:
        try:
            fetched = await self.discovery.fetch_policy(entry.domain)
        except PolicyFetchError as exc:
            self._fetch_failed(entry, policy_id, now, exc)
            return entry
        self.stats.fetch_ok += 1
        policy = fetched.policy
        entry.policy_id = policy_id if policy_id is not None else entry.policy_id
        entry.policy = policy
        entry.fetched_at = now
        entry.expires_at = now + policy.max_age
        entry.failed_id, entry.failed_at, entry.failure = None, 0.0, None
        if policy.mode is Mode.ENFORCE and (self._wants_mx(entry) or self.settings.dane_reply):
            entry.mx_hosts = await self._mx_hosts(entry.domain)
        entry.dane = False
        if policy.mode is Mode.ENFORCE and self.settings.dane_reply and entry.mx_hosts:
            entry.dane = await self.discovery.dane_protected(entry.mx_hosts)
        self.render(entry)
        self.cache.put(entry)
        log.info(
            "event=policy-fetched domain=%s id=%s mode=%s max_age=%d mx=%s",
            entry.domain,
            entry.policy_id,
            policy.mode,
            policy.max_age,
            ",".join(policy.mx),
        )
        return entry

    def _fetch_failed(
        self, entry: CacheEntry, policy_id: str | None, now: float, exc: PolicyFetchError
    ) -> None:
        self.stats.count_fetch_failure(exc.result_type)
        entry.failed_id, entry.failed_at = policy_id, now
        entry.failure = (exc.result_type, exc.reason)
        self.cache.mark_dirty(entry)
        alert = entry.valid(now) and entry.policy is not None and entry.policy.mode is not Mode.NONE
        log.log(
            logging.WARNING if alert else logging.INFO,
            "event=policy-fetch-failed domain=%s id=%s result=%s reason=%r cached_policy=%s",
            entry.domain,
            policy_id,
            exc.result_type,
            exc.reason,
            "kept" if entry.valid(now) else "none",
        )

    def _wants_mx(self, entry: CacheEntry) -> bool:
        policy = entry.policy
        return (
            self.settings.exact_wildcards
            and policy is not None
            and any(p.startswith("*.") for p in policy.mx)
        )

    async def _mx_hosts(self, domain: str) -> tuple[str, ...]:
        try:
            return await self.discovery.lookup_mx(domain)
        except DnsLookupError as exc:
            log.info("event=mx-lookup-failed domain=%s reason=%r", domain, exc.reason)
            return ()

    def render(self, entry: CacheEntry) -> None:
        """Precompute the reply bytes (the answer path only copies them out)."""
        if entry.policy is None:
            entry.reply = REPLY_NOTFOUND
            return
        if entry.dane and self.settings.dane_reply and entry.policy.mode is Mode.ENFORCE:
            entry.reply = self.settings.dane_reply  # never `secure` for a DANE destination
            return
        entry.reply = render_policy_reply(
            entry.policy,
            entry.domain,
            sts_attributes=self.settings.sts_attributes,
            mx_hosts=entry.mx_hosts if self._wants_mx(entry) else None,
        )

    # --- operator actions --------------------------------------------------------------------

    async def refresh_domain(self, domain: str) -> CacheEntry | None:
        """`cache refresh DOMAIN`: forget back-off and negative state, discover now."""
        self._negative.pop(domain, None)
        entry = self.cache.get(domain)
        if entry is not None:
            entry.failed_id, entry.failed_at, entry.policy_id = None, 0.0, None
        return await self._start_discovery(domain)

    async def purge(self, domain: str | None) -> int:
        """`cache purge [DOMAIN]`: forget one domain or everything, in memory and on disk."""
        stored = set(await asyncio.to_thread(self.cache.stored_domains))
        known = {e.domain for e in self.cache.hot_entries()} | stored
        if domain is None:
            self._negative.clear()
            domains = known
        else:
            self._negative.pop(domain, None)
            domains = {domain} & known
        for name in domains:
            self.cache.remove(name)
        return len(domains)

    def rerender_all(self) -> None:
        """After a reload that changed rendering settings (or the TXT re-check interval)."""
        self.memo.txt_recheck = self.settings.txt_recheck
        self.memo.clear()
        for entry in self.cache.hot_entries():
            self.render(entry)

    async def wait_idle(self) -> None:
        """Wait for in-flight discoveries (tests, shutdown)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)
