"""Prometheus gauges per own domain from the TLS reports received (the daemon's registry).

Read at scrape time from the reports-in store (opened read-only for each scrape, in the scrape
thread), so the numbers follow whatever the pipe or Maildir intake stored meanwhile. Label
values are the operator's own domains and RFC 8460 result types: a bounded set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

from mta_sts_policyd.errors import StoreError
from mta_sts_policyd.metrics import PREFIX, REGISTRY
from mta_sts_policyd.reports_in.model import FAILURE_RESULTS_BLOCKING_ENFORCE
from mta_sts_policyd.reports_in.store import ReportsInStore

log = logging.getLogger(__name__)
_lock = threading.Lock()
_source: tuple[Path, tuple[str, ...], Callable[[], datetime]] | None = None


def bind(store: Path, domains: tuple[str, ...], clock: Callable[[], datetime]) -> None:
    """Export the gauges for `domains` from the store at `store` (it may not exist yet)."""
    global _source
    with _lock:
        _source = (store, domains, clock)


def clean_streak(days_with_reports: list[date], blocking_days: set[date]) -> int:
    """Consecutive days, back from the latest reported one, with reports and no blocking
    failure (what `readiness` asks for, as one number to alert and graph on)."""
    streak, expected = 0, None
    for day in sorted(days_with_reports, reverse=True):
        if (expected is not None and day != expected) or day in blocking_days:
            break
        streak += 1
        expected = day - timedelta(days=1)
    return streak


class _ReportsIn:
    def collect(self) -> Iterator[Metric]:
        with _lock:
            source = _source
        sessions = GaugeMetricFamily(
            PREFIX + "own_domain_report_sessions",
            "Sessions in the TLS reports received for the last complete UTC day.",
            labels=["domain"],
        )
        failures = GaugeMetricFamily(
            PREFIX + "own_domain_report_failures",
            "Failed sessions in the TLS reports received for the last complete UTC day.",
            labels=["domain", "result_type"],
        )
        clean = GaugeMetricFamily(
            PREFIX + "own_domain_report_clean_days",
            "Consecutive days of received reports without a failure enforce would defer.",
            labels=["domain"],
        )
        if source is not None:
            store_path, domains, clock = source
            try:
                store = ReportsInStore.reader(store_path)
            except StoreError as exc:  # one unreadable store must not fail the whole scrape
                log.warning("event=reports-in-gauges-skipped reason=%r", str(exc))
                store = None
            if store is not None:
                try:
                    now = clock()
                    for domain in domains:
                        _add_domain(store, domain, now, sessions, failures, clean)
                finally:
                    store.close()
        yield from (sessions, failures, clean)


def _add_domain(
    store: ReportsInStore,
    domain: str,
    now: datetime,
    sessions: GaugeMetricFamily,
    failures: GaugeMetricFamily,
    clean: GaugeMetricFamily,
) -> None:
    """One domain's series, read as `summary` and `readiness` read the store (reports whose
    range starts after `now` left out)."""
    yesterday = (now.astimezone(UTC) - timedelta(days=1)).date()
    policy_days = store.policy_days(domain, date.min, now=now)
    failure_days = store.failure_days(domain, date.min, now=now)
    total = sum(p.successes + p.failures for p in policy_days if p.day == yesterday)
    sessions.add_metric([domain], float(total))
    by_result: dict[str, int] = {}
    for f in failure_days:
        if f.day == yesterday:
            by_result[f.result_type] = by_result.get(f.result_type, 0) + f.count
    for result, count in sorted(by_result.items()):
        failures.add_metric([domain, result], float(count))
    days = sorted({p.day for p in policy_days})
    blocking = {f.day for f in failure_days if f.result_type in FAILURE_RESULTS_BLOCKING_ENFORCE}
    clean.add_metric([domain], float(clean_streak(days, blocking)))


REGISTRY.register(_ReportsIn())
