"""The composition root's part for TLS-RPT: the report context, the libtlsrpt collector, the
mail log follower and the testing-mode shadow, built from the configuration.

Kept beside composition.py (same rule: the configuration becomes objects here and nowhere
else). The TLS-RPT and probe stacks (dkimpy, cryptography, smtplib) are imported inside the
builders, so importing this module costs nothing for a `serve` without TLS-RPT.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.policy.types import DiscoveryLike
from mta_sts_policyd.service.composition import make_prober
from mta_sts_policyd.service.fleet_parts import fleet_enabled
from mta_sts_policyd.state_files import (
    JOURNAL_CURSOR,
    MAILLOG_POSITION,
    QUARANTINE_NAME,
    TLSRPT_STORE_NAME,
)

if TYPE_CHECKING:
    from mta_sts_policyd.probe.prober import MxProber
    from mta_sts_policyd.tlsrpt.context import ReportContext
    from mta_sts_policyd.tlsrpt.libtlsrpt.collector import TlsRptCollector
    from mta_sts_policyd.tlsrpt.maillog.sessions import PlaintextPolicy, PolicyAt
    from mta_sts_policyd.tlsrpt.maillog.watchdog import MaillogWatchdog
    from mta_sts_policyd.tlsrpt.message import DkimSettings
    from mta_sts_policyd.tlsrpt.model import EventSink
    from mta_sts_policyd.tlsrpt.shadow.checker import TestingShadow
    from mta_sts_policyd.tlsrpt.shadow.sink import RelabelingSink


def make_shadow(
    config: Config, discovery: DiscoveryLike, store: EventSink
) -> tuple[MxProber, TestingShadow, RelabelingSink]:
    """Testing-mode domains probed in shadow, and the sink that relabels their sessions."""
    from mta_sts_policyd.tlsrpt.shadow.checker import TestingShadow
    from mta_sts_policyd.tlsrpt.shadow.sink import RelabelingSink

    p = config.probe
    prober = make_prober(config, discovery.lookup_addresses)
    shadow = TestingShadow(prober, discovery.lookup_mx, recheck_interval=p.reprobe_interval)
    # Sessions wait at most 2 probe timeouts for their domain's round (issue 6 §3).
    return prober, shadow, RelabelingSink(store, shadow, max_hold=2 * p.timeout)


def report_context(config: Config) -> ReportContext:
    from mta_sts_policyd.endpoints import parse_smtp_relay
    from mta_sts_policyd.tlsrpt.context import ReportContext
    from mta_sts_policyd.tlsrpt.deliver import DeliverySettings
    from mta_sts_policyd.tlsrpt.record_lookup import txt_lookup
    from mta_sts_policyd.tlsrpt.report import ReportSettings

    t = config.tlsrpt
    host, port = parse_smtp_relay(t.smtp_relay, "tlsrpt.smtp_relay")
    delivery = DeliverySettings(
        envelope_sender=t.envelope_sender,
        smtp_host=host,
        smtp_port=port,
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
        store_path=config.state_dir / TLSRPT_STORE_NAME,
        report=report,
        delivery=delivery,
        dkim=dkim_settings(config),
        retention_days=t.retention_days,
        txt_lookup=txt_lookup(config.discovery.nameservers, config.discovery.dns_timeout),
        fleet=fleet_enabled(config),
    )


def dkim_settings(config: Config) -> DkimSettings:
    """The key that signs report mail, from `[tlsrpt.dkim]`."""
    from mta_sts_policyd.tlsrpt.message import DkimSettings

    t = config.tlsrpt
    return DkimSettings(
        domain=t.dkim.domain,
        selector=t.dkim.selector,
        private_key_path=t.dkim.key_file,
        allow_unsigned=t.allow_unsigned,
    )


def check_report_files(config: Config, *, outside_ok: bool = False) -> str | None:
    """What reports need from disk, checked up front (the DKIM key): `check-config` fails with
    a ConfigError naming it; a note when it cannot be checked here (`outside_ok`). Only the
    DKIM settings are built, so a bad relay or a missing organisation name (refused by the
    loader already) does not stop the key's check."""
    if not config.tlsrpt.enabled:
        return None
    from mta_sts_policyd.tlsrpt.deliver import check_dkim_key

    return check_dkim_key(dkim_settings(config), outside_ok=outside_ok)


def make_collector(config: Config, sink: EventSink) -> TlsRptCollector:
    """The libtlsrpt datagram socket (Postfix >= 3.10), not yet started."""
    from mta_sts_policyd.tlsrpt.libtlsrpt.collector import Quarantine, TlsRptCollector

    t = config.tlsrpt
    return TlsRptCollector(
        Path(t.socket),
        sink,
        mode=int(t.socket_mode, 8),
        group=t.socket_group or None,
        quarantine=Quarantine(config.state_dir / QUARANTINE_NAME),
    )


def make_log_follower(
    config: Config,
    policy_at: PolicyAt,
    sink: EventSink,
    *,
    plaintext_policy: PlaintextPolicy | None = None,
) -> tuple[Any, MaillogWatchdog]:
    """The mail log reader (Postfix < 3.10): a file or the journal, with start() and stop();
    and its watchdog, which says when it cannot read or reads nothing."""
    from zoneinfo import ZoneInfo

    from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions

    m, state = config.maillog, config.state_dir
    sessions = MaillogSessions(
        policy_at,
        sink,
        tz=ZoneInfo(m.timezone),
        exclude_syslog_names=m.exclude_syslog_names,
        plaintext_policy=plaintext_policy,
    )
    from mta_sts_policyd.tlsrpt.maillog.watchdog import MaillogWatchdog

    watchdog = MaillogWatchdog(lambda: sessions.counters.lines, source=m.path or "journal",
                               silence_after=m.silence_alert)  # fmt: skip
    if m.path:
        from mta_sts_policyd.tlsrpt.maillog.file_follower import FileFollower, LogFile

        logfile = LogFile(Path(m.path), state / MAILLOG_POSITION)
        return FileFollower(logfile, sessions, on_error=watchdog.unreadable), watchdog
    from mta_sts_policyd.tlsrpt.maillog.journal_follower import JournalFollower

    follower = JournalFollower(sessions, state / JOURNAL_CURSOR, units=m.journal_units,
                               on_message=watchdog.follower_message)  # fmt: skip
    return follower, watchdog
