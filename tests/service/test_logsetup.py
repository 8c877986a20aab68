"""Logging targets (issue 12 item 4): journald priority prefixes so `journalctl -p warning`
works, zone-aware timestamps where the target has none, a log file that survives logrotate, and
one DEBUG `event=answer` line per socketmap answer with its reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import StsWorld
from support.daemon_process import DaemonProcess, subprocess_env

SCRIPT = """
import logging, sys
from mta_sts_policyd.service.logsetup import setup_logging
setup_logging("DEBUG", *sys.argv[1:])
log = logging.getLogger("mta_sts_policyd.test")
log.debug("event=d"); log.info("event=i"); log.warning("event=w"); log.error("event=e")
"""
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def run_logging(tmp_path: Path, *args: str, journal: bool = False, stream: str = "") -> str:
    """The script's stderr, written to a file; JOURNAL_STREAM names that file when `journal`."""
    err = tmp_path / "stderr"
    with open(err, "wb") as fh:
        st = os.fstat(fh.fileno())
        extra = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"} if journal else {}
        if stream:
            extra["JOURNAL_STREAM"] = stream
        extra["TZ"] = "Europe/Berlin"
        subprocess.run([sys.executable, "-c", SCRIPT, *args], stderr=fh, check=True,
                       env=subprocess_env(extra), timeout=60)  # fmt: skip
    return err.read_text()


def test_under_journald_lines_carry_their_syslog_priority(tmp_path: Path) -> None:
    lines = run_logging(tmp_path, journal=True).splitlines()
    assert [line.split(" ")[0] for line in lines] == [
        "<7>level=DEBUG",
        "<6>level=INFO",
        "<4>level=WARNING",
        "<3>level=ERROR",
    ]


def test_a_journal_stream_that_is_not_our_stderr_is_ignored(tmp_path: Path) -> None:
    """systemd sets JOURNAL_STREAM for the service; a child with stderr elsewhere must not
    prefix (or drop timestamps from) lines that go to a terminal or file."""
    err = run_logging(tmp_path, "auto", stream="1:2")
    assert re.match(rf"{ISO} level=DEBUG logger=mta_sts_policyd.test event=d$", err.splitlines()[0])


def test_stderr_timestamps_carry_the_zone(tmp_path: Path) -> None:
    first = run_logging(tmp_path, "stderr").splitlines()[0]
    assert re.match(rf"{ISO} level=DEBUG ", first)
    assert re.match(r"\S+\+0[12]:00 ", first)  # Europe/Berlin: +01:00 or +02:00, not naive


def test_file_target_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    assert run_logging(tmp_path, "file", str(path)) == ""
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and re.match(rf"{ISO} level=ERROR .* event=e$", lines[3])


FORGING = """
import logging, sys
from mta_sts_policyd.service.logsetup import setup_logging
setup_logging("DEBUG", *sys.argv[1:])
log = logging.getLogger("mta_sts_policyd.test")
log.info("event=answer key=%s reply=OK", "x.test\\nlevel=ERROR logger=fake event=forged\\x1b[31m")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("event=crash")
"""


@pytest.mark.parametrize("target", ["stderr", "journal", "file"])
def test_a_value_with_a_newline_cannot_forge_a_line(tmp_path: Path, target: str) -> None:
    """Every record is one line: control characters a peer sent are escaped (the traceback of
    an exception still follows its record)."""
    path = tmp_path / "daemon.log"
    args = ["file", str(path)] if target == "file" else [target]
    err = tmp_path / "stderr"
    with open(err, "wb") as fh:
        st = os.fstat(fh.fileno())
        extra = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"} if target == "journal" else {}
        subprocess.run([sys.executable, "-c", FORGING, *args], stderr=fh, check=True,
                       env=subprocess_env(extra), timeout=60)  # fmt: skip
    lines = (path if target == "file" else err).read_text().splitlines()
    assert "key=x.test\\nlevel=ERROR logger=fake event=forged\\x1b[31m reply=OK" in lines[0]
    assert not any(
        line.lstrip("<0123456789>").startswith("level=ERROR logger=fake") for line in lines
    )
    assert "event=crash" in lines[1] and lines[-1].strip() == "ValueError: boom"


def test_unopenable_log_file_is_a_config_error(tmp_path: Path) -> None:
    from mta_sts_policyd.errors import ConfigError
    from mta_sts_policyd.service.logsetup import setup_logging

    with pytest.raises(ConfigError, match=r"logging\.file .* cannot open"):
        setup_logging("INFO", "file", str(tmp_path / "no" / "such" / "dir.log"))


ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"


@pytest.fixture
def debug_daemon(sts_world: StsWorld) -> Iterator[DaemonProcess]:
    sts_world.publish("example.test", ENFORCE)
    with DaemonProcess.for_servers(sts_world.dns, sts_world.https) as process:
        process.write_config(logging={"level": "DEBUG"})
        process.start()
        yield process


def test_debug_logs_why_each_answer_is_what_it_is(
    debug_daemon: DaemonProcess, sts_world: StsWorld
) -> None:
    for _ in range(3):  # the repeats would come from the reply memo at INFO
        assert debug_daemon.query("example.test").startswith(b"OK secure")
    assert debug_daemon.query("nothing.test") == b"NOTFOUND "
    assert debug_daemon.query(".example.test") == b"NOTFOUND "
    debug_daemon.wait_for_log(r"event=answer key=\.example\.test", timeout=5)
    answers = re.findall(r"event=answer .*", debug_daemon.log())
    assert len(answers) == 5
    assert answers[0].startswith(
        "event=answer key=example.test domain=example.test reply=OK tier=network mode=enforce id=1"
    )
    assert "tier=memory mode=enforce id=1 expires_in=" in answers[1]
    assert "tier=memory" in answers[2]
    assert "key=nothing.test domain=nothing.test reply=NOTFOUND" in answers[3]
    assert "negative=yes" in answers[3]
    assert answers[4] == "event=answer key=.example.test reply=NOTFOUND reason=no-lookup-key"
    sts_world.dns.fail("_mta-sts.broken.test", "servfail")
    assert debug_daemon.query("broken.test") == b"NOTFOUND "  # DNS failed: the back-off's
    assert debug_daemon.query("broken.test") == b"NOTFOUND "
    debug_daemon.wait_for_log(
        r"event=answer key=broken\.test .* tier=memory|failure=dns", timeout=5
    )
    broken = re.findall(r"event=answer key=broken\.test .*", debug_daemon.log())
    assert "failure=dns negative=no" in broken[-1]
    forged = "x.test\nlevel=ERROR logger=fake event=forged"
    assert debug_daemon.query(forged) == b"NOTFOUND "  # a key a peer can send
    debug_daemon.wait_for_log(r"event=answer key='x\.test\\nlevel=ERROR logger=fake", timeout=5)
    assert "\nlevel=ERROR logger=fake" not in debug_daemon.log()
    assert debug_daemon.query("x.test level=ERROR") == b"NOTFOUND "  # fields inside the line
    debug_daemon.wait_for_log(r"event=answer key='x\.test level=ERROR' reply=NOTFOUND", timeout=5)
