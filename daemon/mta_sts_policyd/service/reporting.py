"""TLS-RPT inside the daemon: config -> settings, and the running pipeline.

Producers (libtlsrpt collector, Postfix log follower, the resolver's own discovery failures)
submit SessionEvents to one store; the report sender builds and delivers the daily reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import ConfigError, ResultType
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.sts.model import Mode
from mta_sts_policyd.tlsrpt.context import ReportContext
from mta_sts_policyd.tlsrpt.deliver import DeliverySettings, DkimSettings, NetworkTransport
from mta_sts_policyd.tlsrpt.model import (
    EventSink,
    FailureDetail,
    PolicyRef,
    PolicyType,
    SessionEvent,
)
from mta_sts_policyd.tlsrpt.record_lookup import txt_lookup
from mta_sts_policyd.tlsrpt.report import ReportSettings
from mta_sts_policyd.tlsrpt.sender import ReportSender
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore

log = logging.getLogger(__name__)

STORE_NAME = "tlsrpt.sqlite"
QUARANTINE_NAME = "tlsrpt-quarantine.log"
MAILLOG_POSITION = "maillog.pos"
JOURNAL_CURSOR = "journal.cursor"
REASON_LIMIT = 255


def report_context(config: Config) -> ReportContext:
    t = config.tlsrpt
    host, _, port = t.smtp_relay.rpartition(":")
    delivery = DeliverySettings(
        envelope_sender=t.envelope_sender,
        smtp_host=host.strip("[]") or "localhost",
        smtp_port=int(port) if port.isdigit() else 25,
        https_timeout=t.https_timeout,
        send_delay_max=t.send_delay_max,
        retry_window=t.retry_window,
    )
    try:
        report = ReportSettings(
            organization_name=t.organization_name,
            contact_info=t.contact_info,
            max_report_bytes=t.max_report_bytes,
        )
    except ValueError as exc:
        raise ConfigError(
            f"tlsrpt: {exc} (set tlsrpt.organization_name and contact_info)"
        ) from None
    return ReportContext(
        store_path=config.state_dir / STORE_NAME,
        report=report,
        delivery=delivery,
        dkim=DkimSettings(
            domain=t.dkim.domain,
            selector=t.dkim.selector,
            private_key_path=t.dkim.key_file,
            allow_unsigned=t.allow_unsigned,
        ),
        retention_days=t.retention_days,
        txt_lookup=txt_lookup(config.discovery.nameservers, config.discovery.dns_timeout),
    )


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


@dataclass
class Reporting:
    """The running TLS-RPT pipeline; `close()` drains producers, then flushes the store."""

    config: Config
    resolver: PolicyResolver
    store: TlsRptStore = field(init=False)
    sink: EventSink = field(init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    async def start(self) -> None:
        config, state = self.config, self.config.state_dir
        ctx = report_context(config)
        self.store = await asyncio.to_thread(
            TlsRptStore, ctx.store_path, retention_days=config.tlsrpt.retention_days
        )
        self.sink = self._start_shadow(self.store) if config.probe.enabled else self.store
        self.resolver.on_failure = self._on_discovery_failure
        if config.tlsrpt.socket:
            self._start_collector(Path(config.tlsrpt.socket), state / QUARANTINE_NAME)
        if config.maillog.enabled:
            await self._start_maillog()
        transport = NetworkTransport(ctx.delivery, ctx.dkim)
        sender = ReportSender(
            self.store, ctx.report, ctx.delivery, transport, txt_lookup=ctx.txt_lookup
        )
        self._tasks.append(asyncio.create_task(sender.run(self._stop)))

    def _start_shadow(self, store: EventSink) -> EventSink:
        """Testing-mode domains: probe their MX hosts and label their sessions (issue 6)."""
        from mta_sts_policyd.probe.prober import MxProber
        from mta_sts_policyd.tlsrpt.shadow.checker import TestingShadow
        from mta_sts_policyd.tlsrpt.shadow.sink import RelabelingSink

        p, discovery = self.config.probe, self.resolver.discovery
        prober = MxProber(
            ca_file=self.config.discovery.ca_file or None,
            timeout=p.timeout,
            concurrency=p.concurrency,
            reprobe_interval=p.reprobe_interval,
            ehlo_name=p.ehlo_name or None,
            port=p.port,
            resolve=discovery.lookup_addresses,
        )
        shadow = TestingShadow(prober, discovery.lookup_mx, recheck_interval=p.reprobe_interval)
        self.resolver.on_policy = shadow.on_policy
        # Sessions wait at most 2 probe timeouts for their domain's round (issue 6 §3).
        sink = RelabelingSink(store, shadow, max_hold=2 * p.timeout)
        # Closers run in reverse: producers stop, held sessions reach the store (before
        # store.close), then rounds are cancelled.
        self._closers += [prober.aclose, shadow.aclose, sink.aclose]
        return sink

    def _on_discovery_failure(
        self, entry: CacheEntry, result_type: ResultType, reason: str
    ) -> None:
        self.sink.submit(failure_event(entry, result_type, reason, time.time()))

    def _start_collector(self, path: Path, quarantine_path: Path) -> None:
        from mta_sts_policyd import metrics
        from mta_sts_policyd.tlsrpt.libtlsrpt.collector import Quarantine, TlsRptCollector

        t = self.config.tlsrpt
        collector = TlsRptCollector(
            path,
            self.sink,
            mode=int(t.socket_mode, 8),
            group=t.socket_group or None,
            quarantine=Quarantine(quarantine_path),
        )
        collector.start()
        metrics.bind_collector_stats(collector.stats)
        self._closers.append(collector.stop)

    async def _start_maillog(self) -> None:
        from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions

        m, state = self.config.maillog, self.config.state_dir
        sessions = MaillogSessions(
            enforce_policy_at(self.resolver),
            self.sink,
            tz=ZoneInfo(m.timezone),
            exclude_syslog_names=m.exclude_syslog_names,
        )
        follower: Any
        if m.path:
            from mta_sts_policyd.tlsrpt.maillog.file_follower import FileFollower, LogFile

            follower = FileFollower(LogFile(Path(m.path), state / MAILLOG_POSITION), sessions)
        else:
            from mta_sts_policyd.tlsrpt.maillog.journal_follower import JournalFollower

            follower = JournalFollower(sessions, state / JOURNAL_CURSOR, units=m.journal_units)
        await follower.start()
        self._closers.append(follower.stop)
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
