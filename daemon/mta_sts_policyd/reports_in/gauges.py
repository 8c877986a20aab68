"""Prometheus gauges per own domain from the TLS reports received (the daemon's registry).

Read at scrape time from the reports-in store (a short read-only connection in the scrape
thread), so the numbers follow whatever the pipe or Maildir intake stored meanwhile. Label
values are the operator's own domains and RFC 8460 result types: a bounded set.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

from mta_sts_policyd.metrics import PREFIX, REGISTRY
from mta_sts_policyd.reports_in.model import FAILURE_RESULTS_BLOCKING_ENFORCE

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
        if source is not None and source[0].is_file():
            store, domains, clock = source
            yesterday = (clock().astimezone(UTC) - timedelta(days=1)).date().isoformat()
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=2.0) as db:
                for domain in domains:
                    total = db.execute(
                        "SELECT COALESCE(SUM(successes + failures), 0) FROM policies"
                        " WHERE domain = ? AND day = ?",
                        (domain, yesterday),
                    ).fetchone()[0]
                    sessions.add_metric([domain], float(total))
                    for result, count in db.execute(
                        "SELECT result_type, SUM(count) FROM failures WHERE domain = ? AND day = ?"
                        " GROUP BY result_type ORDER BY 1",
                        (domain, yesterday),
                    ):
                        failures.add_metric([domain, str(result)], float(count))
                    days = [
                        date.fromisoformat(r[0])
                        for r in db.execute(
                            "SELECT DISTINCT day FROM policies WHERE domain = ?", (domain,)
                        )
                    ]
                    blocking = {
                        date.fromisoformat(r[0])
                        for r in db.execute(
                            "SELECT DISTINCT day FROM failures WHERE domain = ? AND result_type IN"
                            f" ({','.join('?' * len(FAILURE_RESULTS_BLOCKING_ENFORCE))})",
                            (domain, *sorted(FAILURE_RESULTS_BLOCKING_ENFORCE)),
                        )
                    }
                    clean.add_metric([domain], float(clean_streak(days, blocking)))
        yield from (sessions, failures, clean)


REGISTRY.register(_ReportsIn())
