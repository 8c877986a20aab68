"""The spool between the policy host's HTTPS intake and the daemon (reports_in/spool.py).

The host, as its own user, cannot write the daemon's store: it checks a POSTed report and
delivers it into a Maildir; `serve` takes it from there. The end-to-end test runs both as
real processes sharing one config file, as the shipped units do: the report is POSTed while
the daemon is down (201: it is on disk), then `serve` starts, takes it, and
`reports-in summary` shows it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import sqlite3
import ssl
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trustme

from mta_sts_policyd.config.settings import Config, config_from_mapping
from mta_sts_policyd.errors import ConfigError, StoreError
from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.reports_in.intake import Intake
from mta_sts_policyd.reports_in.spool import SpoolIntake, take_spool, watch_spool
from mta_sts_policyd.reports_in.store import ReportsInStore
from mta_sts_policyd.service.composition import make_reports_intake, open_reports_in_store
from mta_sts_policyd.service.host_parts import make_host_intake
from mta_sts_policyd.state_files import REPORTS_IN_STORE_NAME
from support.daemon_process import COMMAND, DaemonProcess, subprocess_env, wait_until
from support.pebble import wait_port
from support.ports import free_port
from support.received_reports import report

DAY = date(2026, 11, 30)
NAME = "mta-sts.example.com"


def make_spool(root: Path) -> Path:
    spool = root / "spool"
    for sub in ("tmp", "new", "cur"):
        (spool / sub).mkdir(parents=True)
    return spool


def config_for(root: Path, spool: Path) -> Config:
    return config_from_mapping(
        {
            "cache": {"state_dir": str(root / "state")},
            "reports_in": {"domains": ["example.com"], "spool_dir": str(spool)},
            "host": {"state_dir": str(root / "host"), "reports_path": "/tlsrpt"},
        }
    )


def gz(doc: object) -> bytes:
    return gzip.compress(json.dumps(doc).encode())


def sessions(store: ReportsInStore) -> int:
    days = store.policy_days("example.com", date(2000, 1, 1))
    return sum(day.successes + day.failures for day in days)


@pytest.fixture
def spooled(tmp_path: Path) -> Iterator[tuple[Config, SpoolIntake]]:
    config = config_for(tmp_path, make_spool(tmp_path))
    intake = make_host_intake(config)
    assert isinstance(intake, SpoolIntake)
    yield config, intake


def test_an_accepted_report_is_on_disk_group_readable_and_the_daemon_takes_it_once(
    spooled: tuple[Config, SpoolIntake],
) -> None:
    config, host = spooled
    os.umask(0o077)  # the units' UMask: the file is made group-readable all the same
    try:
        outcome = host.take_body(gz(report("Sender A", DAY, ok=9, failed=1)),
                                 "application/tlsrpt+gzip", "https:127.0.0.1")  # fmt: skip
    finally:
        os.umask(0o022)
    assert outcome.stored == 1
    (message,) = (host.root / "new").iterdir()
    assert stat.S_IMODE(message.stat().st_mode) == 0o640
    assert list((host.root / "tmp").iterdir()) == []
    assert not (config.state_dir / REPORTS_IN_STORE_NAME).exists()  # the host never opened it

    intake = make_reports_intake(config)
    assert take_spool(host.root, lambda: intake) == (1, 0)
    assert list((host.root / "new").iterdir()) == [] and list((host.root / "cur").iterdir()) == []
    assert sessions(open_reports_in_store(config)) == 10
    # the same report POSTed again is spooled again and counts once
    host.take_body(gz(report("Sender A", DAY, ok=9, failed=1)), "application/tlsrpt+gzip", "x")
    assert take_spool(host.root, lambda: intake) == (1, 0)
    assert sessions(open_reports_in_store(config)) == 10


def test_refused_reports_are_not_spooled(spooled: tuple[Config, SpoolIntake]) -> None:
    config, host = spooled
    doc = report("Sender B", DAY)
    doc["policies"][0]["policy"]["policy-domain"] = "other.example"
    assert host.take_body(gz(doc), "application/tlsrpt+gzip", "x").rejected
    assert host.take_body(b"junk", "application/tlsrpt+gzip", "x").rejected
    assert list((host.root / "new").iterdir()) == []
    assert len(list(Path(config.host.state_dir).rglob("*.reason"))) == 2


def test_a_store_failure_leaves_the_report_in_the_spool_for_the_next_pass(
    spooled: tuple[Config, SpoolIntake],
) -> None:
    config, host = spooled
    host.take_body(gz(report("Sender C", DAY, ok=3)), "application/tlsrpt+gzip", "x")
    intake = make_reports_intake(config)
    with sqlite3.connect(config.state_dir / REPORTS_IN_STORE_NAME) as db:
        db.execute("DROP TABLE reports")
    with pytest.raises(StoreError):
        take_spool(host.root, lambda: intake)
    assert len(list((host.root / "new").iterdir())) == 1
    repaired = make_reports_intake(config)  # opening the store again repairs the schema
    assert take_spool(host.root, lambda: repaired) == (1, 0)
    assert sessions(open_reports_in_store(config)) == 3


def test_a_spool_that_cannot_take_the_body_is_a_store_error_so_the_sender_gets_503(
    spooled: tuple[Config, SpoolIntake],
) -> None:
    _, host = spooled
    shutil.rmtree(host.root / "tmp")
    with pytest.raises(StoreError, match="spool"):
        host.take_body(gz(report("Sender D", DAY)), "application/tlsrpt+gzip", "x")
    assert list((host.root / "new").iterdir()) == []


def test_the_host_refuses_to_start_its_intake_without_a_writable_spool(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"reports_in\.spool_dir: .*tmpfiles"):
        make_host_intake(config_for(tmp_path, tmp_path / "missing"))
    direct = config_from_mapping(
        {
            "cache": {"state_dir": str(tmp_path / "state")},
            "reports_in": {"domains": ["example.com"], "spool_dir": ""},
            "host": {"reports_path": "/tlsrpt"},
        }
    )
    assert isinstance(make_host_intake(direct), Intake)  # empty spool_dir: the store itself


async def test_serve_loop_takes_the_spool_every_interval_and_survives_a_failing_store(
    spooled: tuple[Config, SpoolIntake],
) -> None:
    config, host = spooled
    passes: list[float] = []
    calls = 0

    def intake() -> Intake:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreError("disk full")
        return make_reports_intake(config)

    async def sleep(seconds: float) -> None:
        passes.append(seconds)
        if len(passes) == 3:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    host.take_body(gz(report("Sender E", DAY, ok=5)), "application/tlsrpt+gzip", "x")
    with pytest.raises(asyncio.CancelledError):
        await watch_spool(host.root, intake, 7.0, sleep)
    assert passes == [7.0, 7.0, 7.0]
    assert list((host.root / "new").iterdir()) == []
    assert sessions(open_reports_in_store(config)) == 5


@pytest.mark.slow
def test_host_process_spools_a_post_and_serve_takes_it_in(
    tmp_path: Path, trust_ca: trustme.CA
) -> None:
    spool = make_spool(tmp_path)
    port = free_port()
    policy = tmp_path / "policies" / "example.com" / POLICY_FILE
    policy.parent.mkdir(parents=True)
    policy.write_bytes(b"version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 86400\n")
    leaf = trust_ca.issue_cert(NAME)
    certs = tmp_path / "certs" / NAME
    certs.mkdir(parents=True)
    (certs / CHAIN_FILE).write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (certs / KEY_FILE).write_bytes(leaf.private_key_pem.bytes())
    ca_pem = tmp_path / "ca.pem"
    trust_ca.cert_pem.write_to_path(str(ca_pem))
    today = datetime.now(UTC).date() - timedelta(days=1)
    shared = {  # one config file for both processes, as for the shipped units
        "logging": {"target": "stderr"},
        "reports_in": {"domains": ["example.com"], "spool_dir": str(spool),
                       "spool_interval": 0.2},
        "host": {"listen": [f"127.0.0.1:{port}"], "policy_dir": str(tmp_path / "policies"),
                 "cert_dirs": [str(tmp_path / "certs")], "state_dir": str(tmp_path / "host"),
                 "reports_path": "/tlsrpt"},
    }  # fmt: skip
    with DaemonProcess("127.0.0.1:9", str(ca_pem), 443, shared) as daemon:
        host = subprocess.Popen(
            [*COMMAND, "host", "-c", str(daemon.config_path)],
            env=subprocess_env(),
            stderr=(tmp_path / "host.log").open("wb"),
        )
        try:
            wait_port(port)
            context = ssl.create_default_context(cafile=str(ca_pem))
            with httpx.Client(verify=context) as client:
                answer = client.post(
                    f"https://127.0.0.1:{port}/tlsrpt",
                    content=gz(report("Sender P", today, ok=40, failed=2)),
                    headers={"Host": NAME, "Content-Type": "application/tlsrpt+gzip"},
                    extensions={"sni_hostname": NAME},
                )
            assert answer.status_code == 201, (answer.text, (tmp_path / "host.log").read_text())
            assert len(list((spool / "new").iterdir())) == 1  # on disk while serve is down
            daemon.start()
            daemon.wait_for_log(r"event=report-spool-taken .*taken=1 rejected=0")
            assert wait_until(lambda: not any((spool / "new").iterdir()))
            summary = daemon.cli("reports-in", "summary", "-c", str(daemon.config_path),
                                 "--json")  # fmt: skip
            assert summary.returncode == 0, summary.stderr
            (domain,) = json.loads(summary.stdout)
            text = json.dumps(domain)
            assert "Sender P" in text and "example.com" in text, text
        finally:
            host.terminate()
            host.wait(10)


async def test_a_spool_serve_may_not_enter_is_logged_once_with_the_fix(
    spooled: tuple[Config, SpoolIntake], caplog: pytest.LogCaptureFixture
) -> None:
    """Under the daemon's unit without the drop-in the spool is closed to it (the suite runs
    as root, who enters any folder, so the refusal is raised where the intake is opened)."""
    _, host = spooled
    host.take_body(gz(report("Sender F", DAY)), "application/tlsrpt+gzip", "x")
    rounds: list[float] = []

    async def sleep(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) == 3:
            raise asyncio.CancelledError

    def intake() -> Intake:
        raise PermissionError(13, "Permission denied", str(host.root / "new"))

    with pytest.raises(asyncio.CancelledError):
        await watch_spool(host.root, intake, 1.0, sleep)
    assert caplog.text.count("event=report-spool-failed") == 1
    assert "reports-spool.conf" in caplog.text
    assert len(list((host.root / "new").iterdir())) == 1  # left for a later pass
