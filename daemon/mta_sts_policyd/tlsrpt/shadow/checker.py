"""Testing-mode domains checked in shadow (issue 6 §3), and precise result types for enforce.

For a `testing` policy the daemon answers NOTFOUND (RFC 8461 §5), so Postfix never checks the MX
hosts against the policy and reports its sessions as `no-policy-found`. The shadow probes those MX
hosts itself (probe.py, off the answer path) and relabels the domain's sessions as `sts`
sessions of the testing policy: what the domain owner needs to learn before switching to
enforce. Generic `sts` failures get precise result types from the probe (refine.py); metrics
and the once-a-day warnings of failing MX hosts are in alerts.py.

Threads: `on_policy` runs on the event loop (the socketmap answer path: a dict lookup and two
comparisons when nothing is due). `relabel` and `round_pending` may run on the TLS-RPT
collector's thread; they only read immutable `TestingState` snapshots and hand probe requests
to the loop thread-safely. A round ends in this order: new state swapped in, the domain leaves
`_running`, round listeners called (sink.py relies on it to never strand a held event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mta_sts_policyd.housekeeping import evict
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.probe.prober import MxProber
from mta_sts_policyd.probe.result import ProbeResult
from mta_sts_policyd.sts.model import Mode
from mta_sts_policyd.tlsrpt.model import PolicyRef, PolicyType, SessionEvent
from mta_sts_policyd.tlsrpt.shadow.alerts import VerdictAlerts
from mta_sts_policyd.tlsrpt.shadow.label import (
    TestingState,
    judged,
    sts_ref,
    testing_session,
    with_results,
)
from mta_sts_policyd.tlsrpt.shadow.refine import Refiner

__all__ = ["MAX_MX", "ShadowStats", "TestingShadow", "TestingState"]

log = logging.getLogger(__name__)

MAX_MX = 10
"""MX hosts probed per domain (a domain listing hundreds must not monopolise the prober)."""


@dataclass
class ShadowStats:
    rounds: int = 0
    """Probe rounds started (MX lookup + probes of one testing domain)."""
    relabeled: int = 0
    refined: int = 0
    mismatches: int = 0


class TestingShadow:
    """Probes testing-mode domains' MX hosts and relabels their sessions. Build it on the loop."""

    __test__ = False

    def __init__(
        self,
        prober: MxProber,
        lookup_mx: Callable[[str], Awaitable[tuple[str, ...]]],
        *,
        clock: Callable[[], float] = time.time,
        recheck_interval: float = 6 * 3600,
        retry_interval: float = 300.0,
        max_domains: int = 100_000,
    ) -> None:
        self._prober = prober
        self._lookup_mx = lookup_mx
        self._clock = clock
        self._recheck = recheck_interval
        self._retry = min(retry_interval, recheck_interval)
        self._max_domains = max_domains
        self._loop = asyncio.get_running_loop()
        self._domains: dict[str, TestingState] = {}
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: list[Callable[[str], None]] = []
        self._alerts = VerdictAlerts(clock, max_hosts=10 * max_domains)
        self._refiner = Refiner(
            prober,
            self._probe_soon,
            clock=clock,
            recheck_interval=recheck_interval,
            retry_interval=self._retry,
            max_hosts=max_domains,
        )
        self.stats = ShadowStats()

    # --- the answer path ----------------------------------------------------------------------

    def on_policy(self, entry: CacheEntry) -> None:
        """PolicyListener for `PolicyResolver.on_policy`: O(1) unless a probe round is due."""
        state = self._domains.get(entry.domain)
        if (
            state is not None
            and state.source is entry.policy
            and state.expires_at == entry.expires_at
            and (state.next_round > self._clock() or entry.domain in self._running)
        ):
            return
        try:
            self._update(entry, state)
        except Exception:  # never break the answer path
            log.exception("event=shadow-crashed domain=%s", entry.domain)

    def _update(self, entry: CacheEntry, state: TestingState | None) -> None:
        policy, domain = entry.policy, entry.domain
        if policy is None or policy.mode is not Mode.TESTING:
            if state is not None:  # switched to enforce or none: its sessions are Postfix's now
                del self._domains[domain]
            return
        now = self._clock()
        if state is None or state.source is not policy or state.expires_at != entry.expires_at:
            new = TestingState(policy, sts_ref(domain, policy), entry.expires_at, now)
            if state is not None:  # keep what was probed; the new patterns decide again
                new = with_results(new, state.mx_hosts, state.raw)
            self._put(domain, state := new)
        if state.next_round <= now and domain not in self._running:
            self._running.add(domain)
            self._spawn(self._round(domain), f"testing-shadow {domain}")

    def _put(self, domain: str, state: TestingState) -> None:
        """Swap in a snapshot (one assignment: a reader on another thread sees old or new)."""
        self._domains[domain] = state
        now = self._clock()
        evict(self._domains, self._max_domains, lambda s: s.expires_at <= now)

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- probe rounds (background) ------------------------------------------------------------

    async def _round(self, domain: str) -> None:
        """MX lookup, then every MX probed (the prober bounds concurrency and caches per MX)."""
        self.stats.rounds += 1
        try:
            self._finish(domain, await self._lookup_and_probe(domain))
        finally:  # after the new state is in (module docstring), also when cancelled
            self._running.discard(domain)
            self._round_done(domain)

    async def _lookup_and_probe(self, domain: str) -> Mapping[str, ProbeResult] | None:
        try:
            hosts = tuple(dict.fromkeys(await self._lookup_mx(domain)))[:MAX_MX]
            results = await asyncio.gather(*(self._probe(h) for h in hosts))
        except Exception as exc:  # DNS trouble: try again after retry_interval
            log.info("event=testing-mx-lookup-failed domain=%s reason=%r", domain, str(exc))
            return None
        return {r.mx_host: r for r in results if r is not None}

    def _finish(self, domain: str, raw: Mapping[str, ProbeResult] | None) -> None:
        state = self._domains.get(domain)
        if state is None:
            return  # no longer a testing domain
        if raw is None:
            self._put(domain, replace(state, next_round=self._clock() + self._retry))
            return
        state = with_results(state, tuple(raw), raw)
        unsure = any(r.transient for r in raw.values())  # no MX at all is an answer too
        next_round = self._clock() + (self._retry if unsure else self._recheck)
        self._put(domain, replace(state, next_round=next_round))
        for verdict in state.verdicts.values():
            if judged(verdict) is not None and not verdict.ok:
                self.stats.mismatches += self._alerts.warn_once(domain, verdict)

    def _round_done(self, domain: str) -> None:
        for listener in self._listeners:
            try:
                listener(domain)
            except Exception:  # one listener's bug must not stop the others
                log.exception("event=round-listener-crashed domain=%s", domain)

    async def _probe(self, host: str) -> ProbeResult | None:
        try:
            result = await self._prober.probe(host)
        except ValueError:  # not a host name (the MX lookup let it through)
            log.info("event=testing-mx-invalid mx=%r", host)
            return None
        self._alerts.count(result)
        return result

    # --- events (any thread) ------------------------------------------------------------------

    def relabel(self, event: SessionEvent) -> SessionEvent:
        """Testing domains' no-policy-found sessions become `sts`; `sts` failures are refined."""
        kind = event.policy.policy_type
        if kind is PolicyType.STS:
            return self.refine(event)
        if kind is not PolicyType.NO_POLICY_FOUND:
            return event
        state = self._domains.get(event.report_domain)
        relabeled = testing_session(event, state, self._prober.cached) if state else None
        if relabeled is None:
            return event
        self.stats.relabeled += 1
        return relabeled

    def refine(self, event: SessionEvent) -> SessionEvent:
        """Precise result types for an `sts` failure's generic `validation-failure` details
        (refine.py); any thread."""
        refined = self._refiner.refine(event)
        if refined is not event:
            self.stats.refined += 1
        return refined

    def _probe_soon(self, host: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._start_probe, host)

    def _start_probe(self, host: str) -> None:
        self._spawn(self._probe(host), f"refine-probe {host}")

    # --- waiting for a round (any thread) -----------------------------------------------------

    def add_round_listener(self, listener: Callable[[str], None]) -> None:
        """`listener(domain)` is called on the loop whenever a probe round of `domain` ends."""
        self._listeners.append(listener)

    def round_pending(self, event: SessionEvent) -> bool:
        """Would a probe round (running, or due and not started) bring `event` a verdict?

        Only for no-policy-found sessions of a testing domain whose policy was live then;
        everything else never waits. Any thread.
        """
        if event.policy.policy_type is not PolicyType.NO_POLICY_FOUND:
            return False
        domain = event.report_domain
        state = self._domains.get(domain)
        if state is None or state.expires_at <= event.timestamp:
            return False
        return domain in self._running or state.next_round <= self._clock()

    def request_round(self, domain: str) -> bool:
        """Start a due round of `domain` soon; round listeners hear of it either way (any thread).

        False when the loop is closing (no listener will be called).
        """
        if domain in self._running:
            return True
        try:
            self._loop.call_soon_threadsafe(self._kick, domain)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _kick(self, domain: str) -> None:
        state = self._domains.get(domain)
        if domain in self._running:
            return  # its end calls the listeners
        if state is not None and state.next_round <= self._clock():
            self._running.add(domain)
            self._spawn(self._round(domain), f"testing-shadow {domain}")
            return
        self._round_done(domain)  # nothing due (any more): whoever waits, stop waiting

    # --- helpers ------------------------------------------------------------------------------

    def testing_policy(self, domain: str, at: float) -> PolicyRef | None:
        """The testing policy of `domain` live at `at`, or None.

        Not a `PolicyAt` for maillog.py: Postfix applied no policy to these domains, so the log
        follower must see them as no-policy-found; `RelabelingSink` relabels its events.
        """
        state = self._domains.get(domain)
        return state.policy if state is not None and state.expires_at > at else None

    def verdicts(self, domain: str) -> dict[str, ProbeResult]:
        """The current per-MX verdicts of a testing domain (patterns applied), for tools."""
        state = self._domains.get(domain)
        return dict(state.verdicts) if state is not None else {}

    @property
    def pending(self) -> int:
        """Probe rounds and refine probes not finished yet."""
        return len(self._tasks)

    async def join(self) -> None:
        """Wait until the scheduled rounds and probes are done (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel rounds and probes still running."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
