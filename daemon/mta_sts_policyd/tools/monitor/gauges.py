"""Prometheus gauges per own domain, in the daemon's metrics registry (so `serve` exposes them
on its metrics endpoint when the monitor runs inside it).

Label values are the operator's own domains and their MX hosts: a handful of configured names,
not the open-ended recipient domains the rest of the metrics are careful never to carry.
Read at scrape time from the last published snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from mta_sts_policyd.metrics import PREFIX, REGISTRY
from mta_sts_policyd.tools.check.findings import Severity
from mta_sts_policyd.tools.monitor.state import DomainState

_lock = threading.Lock()
_snapshot: tuple[dict[str, DomainState], float] = ({}, 0.0)


def publish(states: dict[str, DomainState], now: float) -> None:
    global _snapshot
    with _lock:
        _snapshot = (dict(states), now)


class _OwnDomains:
    def collect(self) -> Iterator[Metric]:
        with _lock:
            states, now = _snapshot
        status = GaugeMetricFamily(
            PREFIX + "own_domain_status",
            "Nagios status of the last check (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).",
            labels=["domain"],
        )
        findings = GaugeMetricFamily(
            PREFIX + "own_domain_findings",
            "Findings of the last check by severity.",
            labels=["domain", "severity"],
        )
        days = GaugeMetricFamily(
            PREFIX + "own_domain_certificate_days_left",
            "Days until the certificate expires (smallest over the host's addresses).",
            labels=["domain", "kind", "host"],
        )
        age = GaugeMetricFamily(
            PREFIX + "own_domain_policy_age_seconds",
            "Seconds since the current policy id was first seen.",
            labels=["domain"],
        )
        success = GaugeMetricFamily(
            PREFIX + "own_domain_last_success_timestamp_seconds",
            "Unix time of the last check that could check everything.",
            labels=["domain"],
        )
        for domain, state in sorted(states.items()):
            status.add_metric([domain], int(state.status))
            for severity in Severity:
                count = sum(1 for r in state.findings.values() if r.severity is severity)
                findings.add_metric([domain, str(severity)], count)
            for key, left in sorted(state.certificates.items()):
                kind, _, host = key.partition(" ")
                days.add_metric([domain, kind, host], left)
            if state.policy_since is not None:
                age.add_metric([domain], max(0.0, now - state.policy_since))
            if state.last_success is not None:
                success.add_metric([domain], state.last_success)
        yield from (status, findings, days, age, success)


REGISTRY.register(_OwnDomains())
