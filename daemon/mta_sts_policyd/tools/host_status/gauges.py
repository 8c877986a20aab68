"""Prometheus gauges per served domain, exposed by the host process's own metrics endpoint
(`[host] metrics_listen`), never by the daemon's: the host is a separate process.

`watch` runs `host status`'s observe-and-judge on the host's live policies and certificates
every `[host] status_interval` and publishes the reports; certificate days left are read from
the live certificate set at scrape time (a renewal shows at once). Label values are the
domains this host serves: the operator's own (or its customers'), a configured set.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from mta_sts_policyd.host.certificates import CertificateSet
from mta_sts_policyd.host.documents import PolicyDocuments
from mta_sts_policyd.metrics import PREFIX
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.tools.check.findings import Severity
from mta_sts_policyd.tools.check.observations import Options
from mta_sts_policyd.tools.host_status.judge import Expectations, HostedReport, judge_all
from mta_sts_policyd.tools.host_status.observe import observe_hosted
from mta_sts_policyd.tools.policy_id import IdVerdict

log = logging.getLogger(__name__)

P = PREFIX + "hosted_domain_"


class HostedGauges:
    """A collector: the last status reports plus the live certificate and policy state."""

    def __init__(
        self,
        documents: PolicyDocuments,
        certificates: CertificateSet,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.documents = documents
        self.certificates = certificates
        self.clock = clock
        self._lock = threading.Lock()
        self._reports: tuple[list[HostedReport], float] = ([], 0.0)

    def publish(self, reports: list[HostedReport], at: float) -> None:
        with self._lock:
            self._reports = (list(reports), at)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            reports, at = self._reports
        served = GaugeMetricFamily(
            P + "served",
            "1 for each domain whose policy is served, 0 for one reported without a policy.",
            labels=["domain"],
        )
        days = GaugeMetricFamily(
            P + "certificate_days_left",
            "Days until the certificate in use for mta-sts.DOMAIN expires (live).",
            labels=["domain"],
        )
        now = self.clock()
        for domain in self.documents.domains:
            served.add_metric([domain], 1)
            not_after = self.certificates.not_after(f"mta-sts.{domain}")
            if not_after is not None:
                days.add_metric([domain], (not_after - now).total_seconds() / 86400)
        status = GaugeMetricFamily(
            P + "status",
            "Nagios status of the last host status check (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).",
            labels=["domain"],
        )
        findings = GaugeMetricFamily(
            P + "findings",
            "Findings of the last host status check by severity.",
            labels=["domain", "severity"],
        )
        delegated = GaugeMetricFamily(
            P + "delegation_verified",
            "1 when mta-sts.DOMAIN resolves to this host as [host] expect_* say, else 0.",
            labels=["domain"],
        )
        id_current = GaugeMetricFamily(
            P + "txt_id_current",
            "1 when _mta-sts.DOMAIN carries the served policy's id, else 0.",
            labels=["domain"],
        )
        checked = GaugeMetricFamily(
            P + "last_check_timestamp_seconds",
            "Unix time of the last host status check.",
            labels=["domain"],
        )
        unserved = sorted({r.domain for r in reports} - set(self.documents.domains))
        for domain in unserved:
            served.add_metric([domain], 0)
        for r in reports:
            status.add_metric([r.domain], int(r.status))
            for severity in Severity:
                count = sum(1 for f in r.findings if f.severity is severity)
                findings.add_metric([r.domain, str(severity)], count)
            delegated.add_metric([r.domain], int(r.delegation == "verified"))
            id_current.add_metric([r.domain], int(r.id_verdict == IdVerdict.MATCHES))
            checked.add_metric([r.domain], at)
        yield from (served, days, status, findings, delegated, id_current, checked)


async def watch(
    gauges: HostedGauges,
    dns: DnsClient,
    expect: Expectations,
    options: Options,
    interval: float,
    listed: Callable[[], Collection[str]] = tuple,
) -> None:
    """`host status` on the live state every `interval` seconds, into `gauges` (`listed`: the
    acme_names in force)."""
    while True:
        try:
            documents, certificates = gauges.documents, gauges.certificates
            seen = await observe_hosted(documents, certificates, dns, listed=listed())
            now = gauges.clock()
            gauges.publish(judge_all(seen, expect, options, now), time.time())
        except Exception:  # a bug must not end the checks
            log.exception("event=host-status-crashed")
        await asyncio.sleep(interval)
