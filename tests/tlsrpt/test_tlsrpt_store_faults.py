"""TlsRptStore on a full tmpfs and at open (issue 11 items 7, 8, 17).

A full disk makes SQLite roll the transaction back by itself; the store then tried its own
ROLLBACK, and "cannot rollback - no transaction is active" replaced the real cause. A failed
flush keeps its aggregates for the next one; `close()` on a full disk logs what it loses and
returns instead of raising into the daemon's shutdown.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mta_sts_policyd.errors import ResultType, StateUnusableError, StoreError
from mta_sts_policyd.tlsrpt.model import FailureDetail, PolicyRef, PolicyType, SessionEvent
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support.daemon_process import COMMAND, subprocess_env
from support.filesystems import SmallFs, small_fs
from support.tlsrpt_validate import DAY_TS

pytestmark = pytest.mark.fault

POLICY = PolicyRef(PolicyType.STS, "d0.test", ("version: STSv1", "mode: enforce"), ("mx.d0.test",))


SPILL = 12_000
"""Aggregates enough to overflow SQLite's page cache (2 MB): it then writes inside the
transaction, so the full disk fails a statement, not only the COMMIT."""


def events(count: int) -> list[SessionEvent]:
    """Many distinct aggregates (one per domain), each with a long failure detail."""
    detail = FailureDetail(
        ResultType.CERTIFICATE_EXPIRED, "192.0.2.1", "mx.test", None, None, None, "x" * 200
    )
    return [
        SessionEvent(
            timestamp=DAY_TS,
            report_domain=f"d{i}.test",
            policy=replace(POLICY, policy_domain=f"d{i}.test"),
            success=False,
            failures=(detail,),
        )
        for i in range(count)
    ]


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[SmallFs]:
    with small_fs(tmp_path / "state", "1m") as mounted:
        yield mounted


def test_a_full_disk_names_its_cause_keeps_the_aggregates_and_recovers(tmp_path: Path) -> None:
    with small_fs(tmp_path / "state", "16m") as fs:
        full_disk_then_space(fs)


def full_disk_then_space(fs: SmallFs) -> None:
    store = TlsRptStore(fs.path / "tlsrpt.sqlite", flush_interval=3600)
    fs.fill()
    for event in events(SPILL):
        store.submit(event)
    with pytest.raises(StoreError) as info:
        store.flush()
    assert "database or disk is full" in str(info.value)
    assert "cannot rollback" not in str(info.value)
    fs.free()
    store.flush()  # the same aggregates, now written; the connection is usable again
    assert sum(c.failures for c in store.counts()) == SPILL
    store.close()


def test_close_on_a_full_disk_logs_the_loss_and_returns(
    fs: SmallFs, caplog: pytest.LogCaptureFixture
) -> None:
    store = TlsRptStore(fs.path / "tlsrpt.sqlite", flush_interval=3600)
    fs.fill()
    for event in events(400):
        store.submit(event)
    with caplog.at_level(logging.ERROR):
        store.close()
    assert "event=tlsrpt-store-close-failed aggregates_lost=400" in caplog.text
    assert "database or disk is full" in caplog.text


def test_a_full_disk_at_open_is_not_corruption(fs: SmallFs) -> None:
    path = fs.path / "tlsrpt.sqlite"
    with TlsRptStore(path) as store:
        store.submit(events(1)[0])
    content = path.read_bytes()
    fs.fill()
    with pytest.raises(StateUnusableError, match="cannot open the TLS-RPT store: file system full"):
        TlsRptStore(path)
    assert not [p for p in fs.path.iterdir() if "corrupt" in p.name]
    assert path.read_bytes() == content


def test_the_store_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with TlsRptStore(tmp_path / "tlsrpt.sqlite") as store:
            store.submit(events(1)[0])
            store.flush()
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
    assert {"tlsrpt.sqlite", "tlsrpt.sqlite-wal", "tlsrpt.sqlite-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes


def test_report_commands_on_a_read_only_state_directory_say_why_in_one_line(
    tmp_path: Path,
) -> None:
    """`report list` opens the store like the daemon: exit 73 and the cause, no traceback."""
    config = tmp_path / "config.toml"
    with small_fs(tmp_path / "state", "1m") as fs:
        config.write_text(
            f'[cache]\nstate_dir = "{fs.path}"\n[tlsrpt]\nenabled = true\nsocket = ""\n'
            'organization_name = "Example"\ncontact_info = "tlsrpt@sender.test"\n'
            'envelope_sender = "tlsrpt@sender.test"\nallow_unsigned = true\n'
        )
        with TlsRptStore(fs.path / "tlsrpt.sqlite") as store:
            store.submit(events(1)[0])
        fs.read_only()
        try:
            done = subprocess.run(
                [*COMMAND, "report", "list", "-c", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                env=subprocess_env(),
                check=False,
            )
        finally:
            fs.read_only(False)
    assert done.returncode == 73, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert "tlsrpt.sqlite: cannot open the TLS-RPT store: read-only file system" in done.stderr
