"""TLS-RPT inside the daemon: the running pipeline, built by the composition root
(tlsrpt_parts.py).

Producers (libtlsrpt collector, Postfix log follower, the resolver's own discovery failures)
submit SessionEvents to one store; the report sender builds and delivers the daily reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.service import fleet_parts, tlsrpt_parts
from mta_sts_policyd.service.failure_sessions import FailureSessions
from mta_sts_policyd.sts.match import patterns_matching
from mta_sts_policyd.sts.model import Mode
from mta_sts_policyd.tlsrpt.deliver import check_dkim_key
from mta_sts_policyd.tlsrpt.maillog.watchdog import MaillogWatchdog
from mta_sts_policyd.tlsrpt.model import (
    EventSink,
    FailureDetail,
    PolicyRef,
    PolicyType,
    SessionEvent,
)
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore

if TYPE_CHECKING:
    from mta_sts_policyd.fleet.report_runner import FleetReporting
    from mta_sts_policyd.tlsrpt.context import ReportContext
    from mta_sts_policyd.tlsrpt.sender import ReportSender
    from mta_sts_policyd.tlsrpt.shadow.checker import TestingShadow

log = logging.getLogger(__name__)

REASON_LIMIT = 255


def policy_ref(entry: CacheEntry) -> PolicyRef:
    """The RFC 8460 policy object of a cached policy (sts), or no-policy-found without one."""
    policy = entry.policy
    if policy is None or policy.mode is Mode.NONE:
        return PolicyRef(PolicyType.NO_POLICY_FOUND, entry.domain)
    return PolicyRef(PolicyType.STS, entry.domain, policy.lines, policy.mx)


def failure_event(
    entry: CacheEntry, result_type: ResultType, reason: str, now: float
) -> SessionEvent:
    """RFC 8461 §6: a discovery failure counts against the policy domain's report."""
    ref = policy_ref(entry)
    if ref.policy_type is PolicyType.NO_POLICY_FOUND:
        ref = PolicyRef(PolicyType.STS, entry.domain)
    detail = FailureDetail(result_type, failure_reason_code=reason[:REASON_LIMIT])
    return SessionEvent(now, entry.domain, ref, success=False, failures=(detail,))


def enforce_policy_at(resolver: PolicyResolver) -> Callable[[str, float], PolicyRef | None]:
    """For the log follower: the enforce policy the daemon answered for a domain at a time."""

    def policy_at(domain: str, at: float) -> PolicyRef | None:
        entry = resolver.cache.get(domain)
        if entry is None or entry.policy is None or entry.policy.mode is not Mode.ENFORCE:
            return None
        if not entry.fetched_at - 1 <= at < entry.expires_at:
            return None
        return policy_ref(entry)

    return policy_at


def policy_in_force(resolver: PolicyResolver) -> Callable[[str, float], bool]:
    """For FailureSessions: did the daemon hold a policy (any mode) for a domain at a time?

    Called on the collector's thread too: a plain read of the memory tier (`get` would reorder
    it, a mutation the event loop may be iterating over)."""
    hot = resolver.cache.hot_set

    def in_force(domain: str, at: float) -> bool:
        entry = hot.get(domain)
        return (
            entry is not None
            and entry.policy is not None
            and (entry.fetched_at - 1 <= at < entry.expires_at)
        )

    return in_force


def plaintext_policy_of_testing(
    resolver: PolicyResolver, known_mx: Callable[[str], Iterable[str]] | None = None
) -> Callable[[str, str, float], PolicyRef | None]:
    """For the log follower: the testing policy a plaintext delivery to `host` fails (issue 11).

    Only while the domain's `testing` policy was live, and only for one of its MX hosts (the
    policy's `mx` patterns match it, or the shadow probe's MX lookup listed it): a content
    filter or relay host on the way is not the domain's MX and its plaintext hop is not counted.
    """

    def plaintext_policy(domain: str, host: str, at: float) -> PolicyRef | None:
        entry = resolver.cache.get(domain)
        if entry is None or entry.policy is None or entry.policy.mode is not Mode.TESTING:
            return None
        if not entry.fetched_at - 1 <= at < entry.expires_at:
            return None
        listed = known_mx is not None and host in known_mx(domain)
        if not listed and not patterns_matching(entry.policy.mx, host):
            return None
        return policy_ref(entry)

    return plaintext_policy


@dataclass
class Reporting:
    """The running TLS-RPT pipeline; `close()` drains producers, then flushes the store."""

    config: Config
    resolver: PolicyResolver
    store: TlsRptStore = field(init=False)
    sink: EventSink = field(init=False)
    shadow: TestingShadow | None = None
    failures: FailureSessions | None = None
    """Discovery failures per session (a session source is configured), else None: per lookup."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _closers: list[Callable[[], Any]] = field(default_factory=list)
    maillog_watchdog: MaillogWatchdog | None = None

    async def start(self) -> None:
        config = self.config
        ctx = tlsrpt_parts.report_context(config)
        await asyncio.to_thread(check_dkim_key, ctx.dkim)  # a broken DKIM key: exit 78 now
        self.store = await asyncio.to_thread(ctx.open_store)
        self.sink = self._start_shadow(self.store) if config.probe.enabled else self.store
        if config.tlsrpt.socket or config.maillog.enabled:  # sessions are seen: count per session
            self.failures = FailureSessions(self.sink, policy_in_force(self.resolver))
            self.sink = self.failures
        self.resolver.on_failure = self._on_discovery_failure
        log.info(
            "event=discovery-failures-counted per=%s", "session" if self.failures else "lookup"
        )
        if config.tlsrpt.socket:
            self._start_collector()
        if config.maillog.enabled:
            await self._start_maillog()
        self._tasks.append(asyncio.create_task(self._sender(ctx).run(self._stop)))

    def _sender(self, ctx: ReportContext) -> ReportSender | FleetReporting:
        """The local sender, or in fleet mode the fleet's (never both: each would send)."""
        if not fleet_parts.fleet_enabled(self.config):
            return ctx.sender(self.store)
        settings = fleet_parts.fleet_settings(self.config)
        log.info("event=tlsrpt-fleet-mode node=%s", settings.node_name)
        return fleet_parts.make_fleet_reporting(settings, ctx, self.store)

    def _start_shadow(self, store: EventSink) -> EventSink:
        """Testing-mode domains: probe their MX hosts and label their sessions (issue 6)."""
        prober, shadow, sink = tlsrpt_parts.make_shadow(self.config, self.resolver.discovery, store)
        self.resolver.on_policy = shadow.on_policy
        self.shadow = shadow
        # Closers run in reverse: producers stop, held sessions reach the store (before
        # store.close), then rounds are cancelled.
        self._closers += [prober.aclose, shadow.aclose, sink.aclose]
        return sink

    def _on_discovery_failure(
        self, entry: CacheEntry, result_type: ResultType, reason: str
    ) -> None:
        """Per lookup without a session source; else noted for the sessions it affects (only
        while no policy is in force: under a kept policy the sessions are judged by it)."""
        event = failure_event(entry, result_type, reason, time.time())
        if self.failures is None:
            self.sink.submit(event)
        elif not entry.valid(event.timestamp):
            self.failures.note(event)

    def _start_collector(self) -> None:
        from mta_sts_policyd import metrics

        collector = tlsrpt_parts.make_collector(self.config, self.sink)
        collector.start()
        metrics.bind_collector_stats(collector.stats)
        self._closers.append(collector.stop)

    async def _start_maillog(self) -> None:
        m = self.config.maillog
        known_mx = self.shadow.verdicts if self.shadow else None
        follower, watchdog = tlsrpt_parts.make_log_follower(
            self.config,
            enforce_policy_at(self.resolver),
            self.sink,
            plaintext_policy=plaintext_policy_of_testing(self.resolver, known_mx),
        )
        await follower.start()
        self._closers.append(follower.stop)
        self._tasks.append(asyncio.create_task(watchdog.run(self._stop)))
        self.maillog_watchdog = watchdog
        from mta_sts_policyd import metrics

        metrics.bind_maillog(watchdog)
        metrics.bind_maillog_stats(follower.sessions.counters)
        log.info("event=maillog-following source=%s", m.path or "journal")

    async def close(self) -> None:
        self._stop.set()
        for close in reversed(self._closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        await asyncio.to_thread(self.store.close)
