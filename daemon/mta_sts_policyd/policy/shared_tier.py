"""The fleet's shared tier on the update path (fleet mode, docs/fleet.md): one HTTPS fetch per
domain and policy change for the whole fleet.

Before it fetches, a node reads the shared entry: a valid one holding the wanted id is adopted
(no fetch), and the fleet's failure back-off of that id is honoured (RFC 8461 §3.3 per id, for
the fleet). Otherwise the node takes the fleet-wide fetch lock: the winner fetches and writes
the result (policy or failure) for the others; a loser that holds a valid policy keeps
answering it and does not wait (the winner's write reaches it by invalidation); a cold loser
waits a bounded time for the winner's result, then fetches itself. Redis failing at any step
means fetching here: correctness over efficiency. Nothing read from the fleet ever removes or
downgrades a policy this node knows: only a newer valid entry is adopted, a new id only once
this node's own TXT lookup shows it, and never another policy under the id it holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.policy.shared_model import SharedFailure, SharedPolicy, SharedView
from mta_sts_policyd.policy.types import ResolverContext, SharedPolicies

log = logging.getLogger("mta_sts_policyd.policy.resolver")

FetchHere = Callable[[CacheEntry, str | None, float], Awaitable[bool]]
Adopt = Callable[[CacheEntry, SharedPolicy], Awaitable[bool]]
Recheck = Callable[[str], None]

COLD_WAIT_SHARE = 0.5
"""Of cache.cold_wait, what a cold node waits for another node's fetch before its own."""
REREAD_WIDTH = 16
"""Shared entries re-read at once by a revalidation."""
REFUSED_LIMIT = 10_000
"""Refused shared entries remembered (for logging once) before the memory starts over."""
BACKGROUND_LIMIT = 1_000
"""Shared re-reads (invalidations, store hits) running at once at most; more are dropped (the
periodic revalidation catches up)."""


class FleetTier:
    """Single flight across the fleet, adoption of shared entries, and the invalidations."""

    def __init__(
        self,
        ctx: ResolverContext,
        shared: SharedPolicies,
        fetch_here: FetchHere,
        adopt: Adopt,
        recheck: Recheck,
    ) -> None:
        self.ctx = ctx
        self.shared = shared
        self._fetch_here = fetch_here
        self._adopt = adopt
        self._recheck = recheck
        self.forced: set[str] = set()
        """Domains the operator asked to refetch (`cache refresh`): no adoption, no back-off."""
        self._refetch: set[str] = set()
        """Domains whose shared entry was refused (another policy under the held id): the
        next discovery fetches, through the fleet's single flight, though the id is unchanged."""
        self._refused: dict[str, float] = {}
        """Domain -> fetch time of the shared entry last refused (logged once, not per read)."""
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- single flight ---------------------------------------------------------------------

    async def cold_view(self, domain: str) -> SharedView | None:
        """What the fleet knows of a domain this node has no valid policy for (None: Redis
        could not tell; the node discovers it itself)."""
        try:
            return await self.shared.view(domain)
        except FleetUnavailable:
            return None

    @staticmethod
    def negative_until(view: SharedView, now: float) -> float:
        """When the fleet's "no policy published" ends (0.0: none in force)."""
        if view.policy is not None and view.policy.valid(now):
            return 0.0
        return view.negative_until if view.negative_until > now else 0.0

    async def fetch(
        self, entry: CacheEntry, policy_id: str | None, now: float, view: SharedView | None
    ) -> CacheEntry:
        """Get the policy `policy_id` of `entry.domain` the cheapest way the fleet allows."""
        domain = entry.domain
        if policy_id is None or domain in self.forced:
            self.forced.discard(domain)
            self.ctx.stats.count_fleet("fetched")
            await self._fetch_and_publish(entry, policy_id, now)
            return entry
        try:
            if view is None:
                view = await self.shared.view(domain)
            if await self._use(entry, policy_id, now, view, "adopted"):
                return entry
            token = await self.shared.lock(domain)
        except FleetUnavailable:
            return await self._fallback(entry, policy_id, now)
        if token is None:
            return await self._lost(entry, policy_id, now)
        try:
            return await self._won(entry, policy_id, now)
        finally:
            await self.shared.unlock(domain, token)

    async def _won(self, entry: CacheEntry, policy_id: str, now: float) -> CacheEntry:
        """Holding the lock: read once more (a holder may have finished just before), fetch."""
        try:
            view = await self.shared.view(entry.domain)
        except FleetUnavailable:
            view = SharedView()
        if await self._use(entry, policy_id, now, view, "adopted"):
            return entry
        self.ctx.stats.count_fleet("fetched")
        await self._fetch_and_publish(entry, policy_id, now)
        return entry

    async def _lost(self, entry: CacheEntry, policy_id: str, now: float) -> CacheEntry:
        """Another node fetches. With a valid policy: keep answering it, no wait. Cold: wait
        for the winner's result at most half of cold_wait, then fetch here: a winner that
        died holding the lock still leaves this node time to answer the lookup waiting."""
        if entry.valid(now):
            return entry
        self.ctx.stats.count_fleet("lock_waits")
        within = self.ctx.settings.cold_wait * COLD_WAIT_SHARE
        view = await self.shared.wait(entry.domain, lambda v: self._ready(v, policy_id), within)
        if view is not None and await self._use(entry, policy_id, self.ctx.clock(), view, "waited"):
            return entry
        return await self._fallback(entry, policy_id, now)

    async def _fallback(self, entry: CacheEntry, policy_id: str, now: float) -> CacheEntry:
        """Fetch here; no one waits for the write (Redis failed, or the wait ran out), so it
        goes on in the background instead of delaying the answer."""
        self.ctx.stats.count_fleet("fallback")
        await self._fetch_and_publish(entry, policy_id, now, background=True)
        return entry

    def _ready(self, view: SharedView, policy_id: str) -> bool:
        """The winner's result is in: the policy with that id, or its failure."""
        now = self.ctx.clock()
        policy, failure = view.policy, view.failure
        return (policy is not None and policy.policy_id == policy_id and policy.valid(now)) or (
            failure is not None and failure.policy_id == policy_id
        )

    async def adopt_over_failure(
        self, entry: CacheEntry, policy_id: str, now: float, view: SharedView | None
    ) -> bool:
        """This node's own failure back-off of `policy_id` runs: a valid shared policy of that
        id (a `cache refresh`, or a later fetch elsewhere) is taken instead of waiting the
        back-off out. Never a fetch; Redis failing means waiting it out, as before."""
        if view is None:
            view = await self.cold_view(entry.domain)
        policy = None if view is None else view.policy
        if policy is None or not self._wanted(entry, policy, policy_id, now):
            return False
        return await self._take(entry, policy, "adopted")

    def _wanted(self, entry: CacheEntry, policy: SharedPolicy, policy_id: str, now: float) -> bool:
        """The shared policy is the id wanted, valid, better than what this node holds, and
        not another policy under the id this node holds."""
        return (
            policy.policy_id == policy_id
            and policy.valid(now)
            and (
                entry.policy_id != policy_id
                or not entry.valid(now)
                or policy.fetched_at > entry.fetched_at
            )
            and not self._conflicts(entry, policy)
        )

    def _conflicts(self, entry: CacheEntry, policy: SharedPolicy) -> bool:
        """The shared entry names the id this node holds, but another policy. An id names one
        policy (RFC 8461 §3.1: a changed policy gets a new id), so this is a Redis writer's
        doing, or a domain that changed its policy without a new id: either way it is not
        adopted, and this node fetches the policy itself (logged once per shared entry)."""
        if entry.policy is None or entry.policy_id != policy.policy_id:
            return False
        if entry.policy == policy.policy:
            return False
        if self._refused.get(entry.domain) != policy.fetched_at:
            if len(self._refused) >= REFUSED_LIMIT:
                self._refused.clear()
            self._refused[entry.domain] = policy.fetched_at
            log.warning("event=fleet-policy-refused domain=%s id=%s held_mode=%s shared_mode=%s"
                        " shared_mx=%s shared_fetched_at=%d reason='another policy under the id"
                        " this node holds; fetching it here'", entry.domain, policy.policy_id,
                        entry.policy.mode, policy.policy.mode, ",".join(policy.policy.mx),
                        policy.fetched_at)  # fmt: skip
        return True

    def take_refetch(self, domain: str) -> bool:
        """Whether the update path must fetch `domain` although its TXT id is the one held
        (the shared entry of that id was refused); asked once."""
        if domain in self._refetch:
            self._refetch.discard(domain)
            return True
        return False

    async def _take(self, entry: CacheEntry, policy: SharedPolicy, role: str) -> bool:
        if not await self._adopt(entry, policy):
            return False
        self.ctx.stats.count_fleet(role)
        self.ctx.stats.count_fleet("redis")
        return True

    async def _use(
        self, entry: CacheEntry, policy_id: str, now: float, view: SharedView, role: str
    ) -> bool:
        """Adopt the shared policy or honour the shared failure back-off, if either applies
        (a good policy first: a failure never outweighs a valid policy of the id wanted)."""
        policy = view.policy
        if (
            policy is not None
            and self._wanted(entry, policy, policy_id, now)
            and await self._take(entry, policy, role)
        ):
            return True
        failure = view.failure
        if (
            failure is not None
            and failure.policy_id == policy_id
            and now - failure.at < self.ctx.settings.failure_backoff
        ):
            if entry.failed_id != policy_id or entry.failed_at < failure.at:
                entry.failed_id, entry.failed_at = policy_id, failure.at
                entry.failure = (failure.result_type, failure.reason)
                self.ctx.cache.mark_dirty(entry)
                log.info("event=fleet-failure-backoff domain=%s id=%s result=%s",
                         entry.domain, policy_id, failure.result_type)  # fmt: skip
            return True
        return False

    async def _fetch_and_publish(
        self, entry: CacheEntry, policy_id: str | None, now: float, *, background: bool = False
    ) -> None:
        """Fetch here and share the result: the policy, or the failure of this id."""
        if await self._fetch_here(entry, policy_id, now):
            entry.origin = "fetched"
            write = self.shared.put_policy(entry)
        elif entry.failure is not None and policy_id is not None and entry.failed_at == now:
            failure = SharedFailure(policy_id, now, *entry.failure)
            write = self.shared.put_failure(
                entry.domain, failure, self.ctx.settings.failure_backoff
            )
        else:
            return
        if background:
            self.spawn(write)
        else:
            await write  # before the lock is released: the waiting nodes read it next

    # --- what the rest of the fleet wrote -------------------------------------------------------

    async def changed(self, domain: str) -> None:
        """A shared write for a domain in memory (pub/sub or revalidation): adopt a newer valid
        entry with the same id and the same policy; a new id is confirmed by this node's own
        TXT check first (the single flight then adopts it), and another policy under the held
        id is refused and fetched here (through the single flight), so Redis alone never
        switches a domain this node holds to another policy."""
        entry = self.ctx.cache.hot_set.get(domain)  # no LRU touch: not a lookup
        if entry is None:
            return
        try:
            view = await self.shared.view(domain)
        except FleetUnavailable:
            return
        policy, now = view.policy, self.ctx.clock()
        if policy is None or not policy.valid(now) or policy.fetched_at <= entry.fetched_at:
            return
        if policy.policy_id != entry.policy_id:
            self._recheck(domain)
        elif self._conflicts(entry, policy):
            self._refetch.add(domain)  # through the update path: the fleet's single flight
            self._recheck(domain)
        else:
            await self._take(entry, policy, "adopted")

    def check_later(self, domain: str) -> None:
        """A domain just read from the local store: is the fleet's entry newer? (background)"""
        self.spawn(self.changed(domain))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if len(self._tasks) >= BACKGROUND_LIMIT:
            work.close()
            return
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def revalidate(self) -> int:
        """Compare the shared versions of the domains in memory with what this node saw (pub/sub
        loses messages while disconnected); re-read the changed ones. Returns how many."""
        domains = [
            e.domain
            for e in self.ctx.cache.hot_entries()
            if e.policy is not None or e.failed_id is not None  # a failure a good write ends
        ]
        try:
            changed = await self.shared.changed(domains)
        except FleetUnavailable:
            return 0
        for start in range(0, len(changed), REREAD_WIDTH):  # after a restart: every domain
            await asyncio.gather(*(self.changed(d) for d in changed[start : start + REREAD_WIDTH]))
        return len(changed)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
