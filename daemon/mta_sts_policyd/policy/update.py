"""The update path: what the daemon learns from DNS and HTTPS (RFC 8461 §3.3, §5.1).

One discovery per domain at a time (single flight): the TXT check, when needed a policy fetch,
the MX set for exact wildcards and DANE, and the rendered reply. Nothing here raises to the
answer path: failures become state. "No policy published" is negatively cached for a bounded
time; "could not find out" (a DNS failure) is remembered for the failure back-off, so only the
first lookup of an unknown domain waits on it, and it never removes a known policy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mta_sts_policyd.errors import DnsLookupError, PolicyFetchError
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.policy.mx_watch import MxWatch, wants_mx
from mta_sts_policyd.policy.shared_model import SharedPolicy, SharedView
from mta_sts_policyd.policy.shared_tier import FleetTier
from mta_sts_policyd.policy.types import MxQuestion, ResolverContext, SharedPolicies
from mta_sts_policyd.postfix.policy_reply import render_policy_reply
from mta_sts_policyd.postfix.socketmap import REPLY_NOTFOUND
from mta_sts_policyd.sts.model import Mode, Policy, TxtAbsent, TxtInvalid, TxtRecord

if TYPE_CHECKING:
    from mta_sts_policyd.discovery.client import StsTxtLookup

log = logging.getLogger("mta_sts_policyd.policy.resolver")

_EarlyMx = asyncio.Future[tuple[tuple[tuple[str, ...], float] | None, bool]] | MxQuestion
"""The MX work started beside a fetch: the whole read (with DANE) or the bare question."""

MEMORY_LIMIT = 10_000
"""Negative and unreachable domains remembered before expired ones are pruned."""
BACKGROUND_LIMIT = 1_000
"""Queued background re-checks at most; beyond it a due re-check waits for a later lookup
(after a restart on a large store every domain is due at once: no task per domain)."""


class PolicyUpdater:
    """Discovers, fetches and renders; owns the single-flight tasks and the failure memory."""

    def __init__(self, ctx: ResolverContext) -> None:
        self.ctx = ctx
        self.mx = MxWatch(ctx, self.render)
        self.refresh_slots = asyncio.Semaphore(ctx.settings.refresh_concurrency)
        """Shared by background re-checks and the proactive refresh."""
        self._negative: dict[str, float] = {}
        self._unreachable: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[CacheEntry | None]] = {}
        self._background = 0
        self.fleet: FleetTier | None = None
        if ctx.shared is not None:
            self.attach_shared(ctx.shared)

    def attach_shared(self, shared: SharedPolicies) -> None:
        """Fleet mode: the shared tier between memory and the store (docs/fleet.md)."""
        self.ctx.shared = shared
        self.fleet = FleetTier(self.ctx, shared, self.fetch_here, self.adopt, self._recheck)

    def _recheck(self, domain: str) -> None:
        if domain not in self._inflight and self.may_start_background():
            self.start(domain, background=True)

    # --- what the answer path asks -----------------------------------------------------------

    def known_absent(self, domain: str, now: float) -> bool:
        """No policy published, or DNS could not tell, recently: answer NOTFOUND without waiting."""
        return self._negative.get(domain, 0.0) > now or self._unreachable.get(domain, 0.0) > now

    def no_policy(self, domain: str, now: float) -> bool:
        """The last lookup found no policy published (not: DNS could not tell)."""
        return self._negative.get(domain, 0.0) > now

    def in_flight(self, domain: str) -> bool:
        return domain in self._inflight

    def may_start_background(self) -> bool:
        return self._background < BACKGROUND_LIMIT

    def start(self, domain: str, *, background: bool = False) -> asyncio.Task[CacheEntry | None]:
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

    def forget(self, domain: str | None) -> None:
        """Operator actions: drop negative and unreachable memory (of one domain or all)."""
        if domain is None:
            self._negative.clear()
            self._unreachable.clear()
        else:
            self._negative.pop(domain, None)
            self._unreachable.pop(domain, None)

    async def wait_idle(self) -> None:
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)
        if self.fleet is not None:
            await self.fleet.wait_idle()

    # --- discovery ----------------------------------------------------------------------------

    async def _discover_bounded(self, domain: str) -> CacheEntry | None:
        async with self.refresh_slots:
            return await self._discover(domain)

    def _background_done(self, _task: asyncio.Task[CacheEntry | None]) -> None:
        self._background -= 1

    async def _discover(self, domain: str) -> CacheEntry | None:
        """One TXT check and, when needed, one fetch. Never raises: failures are state."""
        try:
            return await self._check_txt(domain)
        except Exception:  # a bug must not poison the single-flight slot
            log.exception("event=discovery-crashed domain=%s", domain)
            return self.ctx.cache.get(domain)

    async def _check_txt(self, domain: str) -> CacheEntry | None:
        ctx = self.ctx
        now = ctx.clock()
        entry = ctx.cache.get(domain)
        # No valid policy: a fetch follows if a record exists, so its address question starts now.
        cold = entry is None or not entry.valid(now)
        view = None
        if cold and self.fleet is not None:
            view = await self.fleet.cold_view(domain)
            if view is not None and self._shared_negative(domain, view, now):
                return entry
        try:
            lookup = await ctx.discovery.lookup_txt(domain, fetch_likely=cold)
        except DnsLookupError as exc:
            return self._txt_failed(domain, entry, now, exc)
        ctx.stats.last_success = now
        record = lookup.result
        if not isinstance(record, TxtRecord):
            return self._no_live_policy(domain, entry, now, lookup)
        self._negative.pop(domain, None)
        self._unreachable.pop(domain, None)
        if entry is None:
            entry = CacheEntry(domain=domain, last_used=now)
            entry.reply = REPLY_NOTFOUND
            ctx.cache.put(entry)
        entry.txt_checked_at = now
        ctx.cache.mark_dirty(entry)
        refetch = self.fleet is not None and self.fleet.take_refetch(domain)
        if entry.valid(now) and entry.policy_id == record.id and not refetch:
            entry.failure = None  # e.g. a failed fetch for an id that was withdrawn again
            return entry
        backoff = ctx.settings.failure_backoff
        if entry.failed_id == record.id and now - entry.failed_at < backoff:
            # RFC 8461 §3.3: at most one attempt per id every failure_backoff seconds; a good
            # policy of that id another node fetched meanwhile is no attempt, and ends it.
            if self.fleet is not None:
                await self.fleet.adopt_over_failure(entry, record.id, now, view)
            return entry
        return await self.fetch(entry, record.id, now, view)

    def _shared_negative(self, domain: str, view: SharedView, now: float) -> bool:
        """The fleet found no policy published lately: remember it here, skip DNS (bounded by
        this node's own negative TTL, whatever the shared record claims)."""
        assert self.fleet is not None
        until = self.fleet.negative_until(view, now)
        if not until:
            return False
        self._remember(
            self._negative, domain, min(until, now + self.ctx.settings.negative_ttl), now
        )
        return True

    def _txt_failed(
        self, domain: str, entry: CacheEntry | None, now: float, exc: DnsLookupError
    ) -> CacheEntry | None:
        """Could not find out: keep everything known, remember it for the failure back-off."""
        log.info("event=txt-lookup-failed domain=%s reason=%r", domain, exc.reason)
        self.ctx.stats.txt_failures += 1
        if entry is not None:
            entry.txt_checked_at = now
        if entry is None or not entry.valid(now):
            self._remember(self._unreachable, domain, now + self.ctx.settings.failure_backoff, now)
        return entry

    def _no_live_policy(
        self, domain: str, entry: CacheEntry | None, now: float, lookup: StsTxtLookup
    ) -> CacheEntry | None:
        """RFC 8461 §3.1, §3.3: no usable TXT record; an unexpired cached policy still applies."""
        if isinstance(lookup.result, TxtInvalid):
            log.info("event=txt-invalid domain=%s reason=%r", domain, lookup.result.reason)
        self._unreachable.pop(domain, None)
        if entry is not None:
            entry.txt_checked_at = now
            self.ctx.cache.mark_dirty(entry)
            if entry.valid(now):
                return entry
        ttl = min(self.ctx.settings.negative_ttl, max(float(lookup.ttl), 30.0))
        self._remember(self._negative, domain, now + ttl, now)
        if self.fleet is not None and isinstance(lookup.result, TxtAbsent):
            self.fleet.spawn(self.fleet.shared.put_negative(domain, now + ttl))
        return entry

    @staticmethod
    def _remember(memory: dict[str, float], domain: str, until: float, now: float) -> None:
        memory[domain] = until
        if len(memory) > MEMORY_LIMIT:
            for name in [d for d, t in memory.items() if t <= now]:
                del memory[name]

    # --- fetch ---------------------------------------------------------------------------------

    async def fetch(
        self, entry: CacheEntry, policy_id: str | None, now: float, view: SharedView | None = None
    ) -> CacheEntry:
        """Get the policy: in fleet mode through the fleet's single flight (which may adopt
        another node's fetch), else fetched here."""
        if self.fleet is not None:
            return await self.fleet.fetch(entry, policy_id, now, view)
        await self.fetch_here(entry, policy_id, now)
        return entry

    async def fetch_here(self, entry: CacheEntry, policy_id: str | None, now: float) -> bool:
        """Fetch the policy; on success replace the entry's policy, MX data and reply at once."""
        early = self._start_mx_and_dane(entry)
        try:
            fetched = await self.ctx.discovery.fetch_policy(entry.domain)
        except PolicyFetchError as exc:
            if early is not None:
                early.cancel()
            self._fetch_failed(entry, policy_id, now, exc)
            return False
        except BaseException:  # cancelled (shutdown) or a bug: nobody reads the MX answer
            if early is not None:
                early.cancel()
            raise
        policy = fetched.policy
        # Everything that may wait or fail comes first; the entry changes in one step after it,
        # so no entry ever holds a policy without its reply (a crash must not leave `0:,`).
        mx, dane = await self._mx_and_dane(entry, policy, early)
        self.ctx.stats.fetch_ok += 1
        entry.policy_id = policy_id if policy_id is not None else entry.policy_id
        entry.policy = policy
        entry.fetched_at = now
        entry.expires_at = now + policy.max_age
        entry.failed_id, entry.failed_at, entry.failure = None, 0.0, None
        self.mx.apply(entry, mx, now)
        entry.dane = dane
        self.render(entry)
        self.ctx.cache.put(entry)
        log.info(
            "event=policy-fetched domain=%s id=%s mode=%s max_age=%d mx=%s",
            entry.domain,
            entry.policy_id,
            policy.mode,
            policy.max_age,
            ",".join(policy.mx),
        )
        return True

    async def adopt(self, entry: CacheEntry, shared: SharedPolicy) -> bool:
        """Take a policy another node fetched (already re-validated by the fleet tier), with
        this node's own MX and DANE data; False when this node learnt a newer one meanwhile."""
        mx, dane = await self._mx_and_dane(entry, shared.policy, None)
        if entry.valid(self.ctx.clock()) and entry.fetched_at >= shared.fetched_at:
            return False  # never a downgrade
        now = self.ctx.clock()
        entry.policy_id, entry.policy = shared.policy_id, shared.policy
        entry.fetched_at = shared.fetched_at
        entry.expires_at = shared.fetched_at + shared.policy.max_age
        entry.failed_id, entry.failed_at, entry.failure = None, 0.0, None
        entry.origin = "redis"
        self.mx.apply(entry, mx, now)
        entry.dane = dane
        self.render(entry)
        self.ctx.cache.put(entry)
        log.info("event=policy-adopted domain=%s id=%s mode=%s max_age=%d fetched_at=%d",
                 entry.domain, entry.policy_id, shared.policy.mode, shared.policy.max_age,
                 shared.fetched_at)  # fmt: skip
        return True

    def _start_mx_and_dane(self, entry: CacheEntry) -> _EarlyMx | None:
        """MX (and TLSA) questions in parallel with the fetch, when the reply may need them.

        Known before the fetch only from the previous policy; a cold domain (none yet) asks
        when exact wildcards or DANE are on: one MX question, which the resolver usually has
        cached (Postfix asks for the same set), against a round trip after the fetch. Without
        DANE its answer is parsed only if the policy turns out to need it (a `*.` pattern):
        most policies name their MX hosts, and parsing costs more CPU than asking.
        """
        settings = self.ctx.settings
        if entry.policy is not None and not (wants_mx(entry, settings) or settings.dane_reply):
            return None
        if entry.policy is None and not (settings.exact_wildcards or settings.dane_reply):
            return None
        if settings.dane_reply:  # the TLSA questions need the MX hosts at once
            return asyncio.ensure_future(self._read_mx_and_dane(entry.domain))
        try:
            return self.ctx.discovery.mx_later(entry.domain)
        except DnsLookupError:  # not a name that can be asked: the ordinary read reports it
            return None

    async def _mx_and_dane(
        self, entry: CacheEntry, policy: Policy, early: _EarlyMx | None
    ) -> tuple[tuple[tuple[str, ...], float] | None, bool]:
        settings = self.ctx.settings
        probe = CacheEntry(entry.domain, policy=policy)
        if policy.mode is not Mode.ENFORCE or not (
            wants_mx(probe, settings) or settings.dane_reply
        ):
            if early is not None:
                early.cancel()
            return None, False
        if isinstance(early, asyncio.Future):
            return await early
        return await self._read_mx_and_dane(entry.domain, early)

    async def _read_mx_and_dane(
        self, domain: str, asked: MxQuestion | None = None
    ) -> tuple[tuple[tuple[str, ...], float] | None, bool]:
        """(MX hosts, TTL) or None, and whether DANE protects them. Never raises."""
        mx = await self.mx.read(domain, asked)
        if mx is None or not mx[0] or not self.ctx.settings.dane_reply:
            return mx, False
        try:
            return mx, await self.ctx.discovery.dane_protected(mx[0])
        except Exception as exc:  # fail-open: MTA-STS applies (RFC 8461 §2)
            log.info("event=dane-check-failed domain=%s reason=%r", domain, str(exc))
            return mx, False

    def _fetch_failed(
        self, entry: CacheEntry, policy_id: str | None, now: float, exc: PolicyFetchError
    ) -> None:
        self.ctx.stats.count_fetch_failure(exc.result_type)
        entry.failed_id, entry.failed_at = policy_id, now
        entry.failure = (exc.result_type, exc.reason)
        self.ctx.cache.mark_dirty(entry)
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

    # --- rendering -----------------------------------------------------------------------------

    def render(self, entry: CacheEntry) -> None:
        """Precompute the reply bytes (the answer path only copies them out)."""
        settings = self.ctx.settings
        policy = entry.policy
        if policy is None:
            entry.reply = REPLY_NOTFOUND
            return
        if entry.dane and settings.dane_reply and policy.mode is Mode.ENFORCE:
            entry.reply = settings.dane_reply  # never `secure` for a DANE destination
            return
        exact = wants_mx(entry, settings)
        entry.reply = render_policy_reply(
            policy,
            entry.domain,
            sts_attributes=settings.sts_attributes,
            mx_hosts=entry.mx_hosts if exact and entry.mx_checked_at else None,
        )
        if exact:
            self.mx.watch(entry)
