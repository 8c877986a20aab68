"""TlsRptStore: batching, durability (close, kill -9), corruption, retention (docs/conformance.md:
RPT-durable-days)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from mta_sts_policyd.errors import ResultType, StoreError
from mta_sts_policyd.tlsrpt.model import FailureDetail, PolicyRef, PolicyType, SessionEvent
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from mta_sts_policyd.tlsrpt.store.ledger import Job, JobBook, JobState
from support.tlsrpt_validate import DAY_TS, STS

DAY = date(2026, 11, 21)
EXPIRED = FailureDetail(
    ResultType.CERTIFICATE_EXPIRED,
    "192.0.2.1",
    "mx.example.com",
    None,
    "198.51.100.1",
    None,
    "expired",
)


def ev(
    ok: bool,
    *,
    ts: float = DAY_TS,
    domain: str = "company-y.example",
    failures: tuple[FailureDetail, ...] = (),
    record: str | None = None,
) -> SessionEvent:
    return SessionEvent(ts, domain, STS, ok, failures, record)


def test_aggregates_per_day_domain_record_policy(tmp_path: Path) -> None:
    with TlsRptStore(tmp_path / "s.db", flush_interval=60) as store:
        for _ in range(3):
            store.submit(ev(True))
        store.submit(ev(False, failures=(EXPIRED,)))
        store.submit(ev(False, failures=(EXPIRED,)))
        store.submit(ev(True, ts=DAY_TS + 86400))  # next UTC day
        store.submit(ev(True, record="v=TLSRPTv1;rua=mailto:a@x.example"))  # other record
        store.flush()
        store.submit(ev(True))  # a second flush adds to the same rows
        store.flush()
        assert store.days() == [DAY, DAY + timedelta(days=1)]
        groups = store.domain_days(DAY)
        assert [g.tlsrpt_record for g in groups] == [None, "v=TLSRPTv1;rua=mailto:a@x.example"]
        (agg,) = groups[0].policies
        assert (agg.successes, agg.failures) == (4, 2)
        assert agg.policy == STS
        ((detail, count),) = agg.details
        assert count == 2 and detail.result_type is ResultType.CERTIFICATE_EXPIRED
        counts = store.counts(DAY)
        assert [(c.successes, c.failures) for c in counts] == [(4, 2), (1, 0)]


def test_domain_is_normalised_and_no_policy_domain_filled(tmp_path: Path) -> None:
    """DG-envelope: lower-case, no trailing dot; RPT-4.4-policy-domain-always."""
    with TlsRptStore(tmp_path / "s.db") as store:
        store.submit(
            SessionEvent(DAY_TS, "Other.Example.", PolicyRef(PolicyType.NO_POLICY_FOUND, ""), True)
        )
        store.flush()
        (dd,) = store.domain_days(DAY, "other.example")
        assert dd.report_domain == "other.example"
        assert dd.policies[0].policy.policy_domain == "other.example"


def test_submit_is_memory_only_and_fast(tmp_path: Path) -> None:
    """Collector contract: submit is O(1) and never waits for disk."""
    with TlsRptStore(tmp_path / "s.db", flush_interval=3600) as store:
        e = ev(True)
        start = time.perf_counter()
        for _ in range(20_000):
            store.submit(e)
        assert time.perf_counter() - start < 0.5
        assert store.counts() == []  # nothing written yet
        assert store.flush() == 20_000
        assert store.counts()[0].successes == 20_000


def test_background_thread_commits_within_interval(tmp_path: Path) -> None:
    with TlsRptStore(tmp_path / "s.db", flush_interval=0.05) as store:
        store.submit(ev(True))
        deadline = time.monotonic() + 5
        while not store.counts() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.counts()[0].successes == 1


def test_close_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM path: everything submitted before close() is on disk afterwards."""
    store = TlsRptStore(tmp_path / "s.db", flush_interval=3600)
    for _ in range(1234):
        store.submit(ev(False, failures=(EXPIRED,)))
    store.close()
    with TlsRptStore(tmp_path / "s.db") as again:
        (agg,) = again.domain_days(DAY)[0].policies
        assert agg.failures == 1234 and agg.details[0][1] == 1234


def test_full_buffer_drops_and_counts(tmp_path: Path) -> None:
    with TlsRptStore(tmp_path / "s.db", flush_interval=3600, max_buffered=10) as store:
        for _ in range(15):
            store.submit(ev(True))
        assert store.dropped == 5
        store.flush()
        assert store.counts()[0].successes == 10


def test_corrupt_file_is_moved_aside_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    garbage = b"this is not an SQLite database" * 100
    path.write_bytes(garbage)
    with TlsRptStore(path) as store:
        assert store.moved_aside == tmp_path / "s.db.corrupt"
        assert store.moved_aside.read_bytes() == garbage
        store.submit(ev(True))
    with TlsRptStore(path) as store:
        assert store.moved_aside is None and store.counts()[0].successes == 1


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        TlsRptStore(tmp_path / "missing-dir" / "s.db")


def test_retention_keeps_unresolved_days(tmp_path: Path) -> None:
    """Days older than retention go, unless their report is still scheduled."""
    with TlsRptStore(tmp_path / "s.db", retention_days=10) as store:
        for offset in (0, 1, 30):
            store.submit(ev(True, ts=DAY_TS + offset * 86400))
        store.flush()
        book = JobBook(store)
        book.create(Job(DAY, "company-y.example", None, JobState.SCHEDULED, 0.0), 0.0)
        book.create(
            Job(DAY + timedelta(days=1), "company-y.example", None, JobState.DELIVERED, 0.0), 0.0
        )
        pruned = store.prune(DAY + timedelta(days=31))
        assert pruned == [DAY + timedelta(days=1)]
        assert store.days() == [DAY, DAY + timedelta(days=30)]
        assert book.get(DAY + timedelta(days=1), "company-y.example", None) is None


def test_retention_keeps_days_the_fleet_has_not_sent(tmp_path: Path) -> None:
    """Fleet mode has no local jobs: the days it names in `keep` stay (docs/fleet.md)."""
    with TlsRptStore(tmp_path / "s.db", retention_days=10) as store:
        for offset in (0, 1):
            store.submit(ev(True, ts=DAY_TS + offset * 86400))
        store.flush()
        assert store.prune(DAY + timedelta(days=31), keep={DAY}) == [DAY + timedelta(days=1)]
        assert store.days() == [DAY]


_WRITER = textwrap.dedent("""
    import sys, time
    from mta_sts_policyd.tlsrpt.model import PolicyRef, PolicyType, SessionEvent
    from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
    store = TlsRptStore(sys.argv[1], flush_interval=float(sys.argv[2]))
    e = SessionEvent(1795219200, "k.example", PolicyRef(PolicyType.STS, "k.example"), True)
    n = 0
    while True:
        for _ in range(100):
            store.submit(e)
        n += 100
        print(n, flush=True)
        time.sleep(0.002)
""")


def test_kill_9_loses_at_most_the_batching_window(tmp_path: Path) -> None:
    """Everything submitted more than ~one flush interval before SIGKILL is on disk."""
    interval = 0.2
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path / "k.db"), str(interval)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    progress: list[tuple[float, int]] = []
    start = time.monotonic()
    while time.monotonic() - start < 1.5:
        progress.append((time.monotonic(), int(proc.stdout.readline())))
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last_printed = max([progress[-1][1], *(int(x) for x in proc.stdout.read().split())])
    with TlsRptStore(tmp_path / "k.db") as store:
        stored = store.counts()[0].successes
    safe = max(n for t, n in progress if t <= killed_at - 2 * interval - 0.1)
    assert safe <= stored <= last_printed + 100
