"""Per-own-domain gauges from the received reports, as the daemon's metrics endpoint shows them."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prometheus_client import generate_latest

from mta_sts_policyd.metrics import REGISTRY
from mta_sts_policyd.reports_in import gauges
from mta_sts_policyd.reports_in.parse import parse_report
from mta_sts_policyd.reports_in.store import ReportsInStore
from support.received_reports import failure, report

D0 = date(2026, 11, 20)


def test_clean_streak_counts_back_from_the_latest_day() -> None:
    days = [D0 + timedelta(days=i) for i in range(10)]
    assert gauges.clean_streak(days, set()) == 10
    assert gauges.clean_streak(days, {D0 + timedelta(days=6)}) == 3
    assert gauges.clean_streak(days, {D0 + timedelta(days=9)}) == 0
    gap = [d for d in days if d != D0 + timedelta(days=7)]
    assert gauges.clean_streak(gap, set()) == 2
    assert gauges.clean_streak([], set()) == 0


def test_scrape_shows_sessions_failures_and_clean_days(tmp_path: Path) -> None:
    path = tmp_path / "reports-in.sqlite"
    store = ReportsInStore(path)
    today = datetime.now(UTC).date()
    for i in range(1, 6):
        details = [failure("certificate-expired", count=4)] if i == 4 else []
        doc = report(
            "Org", today - timedelta(days=i), ok=50, failed=4 if i == 4 else 0, details=details
        )
        store.add(parse_report(json.dumps(doc).encode()), "test", 0.0)
    store.close()
    gauges.bind(path, ("example.com", "quiet.example"), lambda: datetime.now(UTC))
    try:
        text = generate_latest(REGISTRY).decode()
        gauges.bind(path, ("example.com",), lambda: datetime.now(UTC) - timedelta(days=3))
        earlier = generate_latest(REGISTRY).decode()  # "yesterday" is now the failing day
    finally:
        gauges.bind(tmp_path / "absent.sqlite", (), lambda: datetime.now(UTC))
    assert 'mta_sts_policyd_own_domain_report_sessions{domain="example.com"} 50.0' in text
    assert 'mta_sts_policyd_own_domain_report_sessions{domain="quiet.example"} 0.0' in text
    assert 'mta_sts_policyd_own_domain_report_clean_days{domain="example.com"} 3.0' in text
    assert "own_domain_report_failures{" not in text  # yesterday was clean
    assert (
        'own_domain_report_failures{domain="example.com",result_type="certificate-expired"} 4.0'
        in earlier
    )


def test_no_store_yet_exports_no_series(tmp_path: Path) -> None:
    gauges.bind(tmp_path / "absent.sqlite", ("example.com",), lambda: datetime.now(UTC))
    text = generate_latest(REGISTRY).decode()
    assert "own_domain_report_sessions{" not in text
    assert not (tmp_path / "absent.sqlite").exists()


def test_reports_dated_after_now_do_not_count(tmp_path: Path) -> None:
    """As in `summary` and `readiness`: a stored report about a day to come (taken in before
    the intake refused them) neither ends the clean streak nor adds sessions."""
    path = tmp_path / "reports-in.sqlite"
    store = ReportsInStore(path)
    today = datetime.now(UTC).date()
    for i in range(1, 4):
        store.add(
            parse_report(json.dumps(report("Org", today - timedelta(days=i))).encode()), "t", 0
        )
    future = report("Org", today + timedelta(days=3), ok=9, failed=9,
                    details=[failure("certificate-expired", count=9)])  # fmt: skip
    store.add(parse_report(json.dumps(future).encode()), "t", 0.0)
    store.close()
    gauges.bind(path, ("example.com",), lambda: datetime.now(UTC))
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        gauges.bind(tmp_path / "absent.sqlite", (), lambda: datetime.now(UTC))
    assert 'mta_sts_policyd_own_domain_report_clean_days{domain="example.com"} 3.0' in text


def test_an_unreadable_store_leaves_the_gauges_out_not_the_scrape(tmp_path: Path) -> None:
    path = tmp_path / "reports-in.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    gauges.bind(path, ("example.com",), lambda: datetime.now(UTC))
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        gauges.bind(tmp_path / "absent.sqlite", (), lambda: datetime.now(UTC))
    assert "own_domain_report_sessions{" not in text
    assert "mta_sts_policyd_" in text  # the rest of the registry still scraped
