"""Issue 11 item 16: the log followers skip over-long lines and NUL-filled regions, counted, and
go on with what follows (a crash can leave megabytes of NULs without a newline in a log file).

Real captured Postfix lines (tests/fixtures/maillog) after the junk; the file follower reads a
real file, the journal follower a `journalctl` stand-in printing JSON lines like `-o json`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mta_sts_policyd.tlsrpt.maillog.file_follower import LINE_LIMIT, FileFollower, LogFile
from mta_sts_policyd.tlsrpt.maillog.journal_follower import JournalFollower
from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions
from mta_sts_policyd.tlsrpt.model import PolicyRef, SessionEvent
from support import TESTS_DIR

pytestmark = pytest.mark.fault

FIXTURES = TESTS_DIR / "fixtures" / "maillog"
TRUSTED = (FIXTURES / "may-trusted.log").read_bytes()
UNTRUSTED = (FIXTURES / "may-untrusted.log").read_bytes()


class Sink:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def submit(self, event: SessionEvent) -> None:
        self.events.append(event)


def no_policy(domain: str, when: float) -> PolicyRef | None:
    return None


async def until(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def domains(sink: Sink) -> list[str]:
    return [e.report_domain for e in sink.events]


JUNK = {
    "nul-region-then-lines": b"\0" * (4 << 20),  # what a crash leaves: no newline at all
    "nul-region-over-three-reads": b"\0" * (10 << 20),  # one region, one warning
    "overlong-line-past-a-read": b"x" * (5 << 20) + b"\n",
    "overlong-line-inside-a-read": b"y" * (LINE_LIMIT + 10) + b"\n",
}


@pytest.mark.parametrize("junk", list(JUNK), ids=list(JUNK))
async def test_file_follower_skips_junk_and_goes_on(
    tmp_path: Path, junk: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mail.log"
    path.write_bytes(TRUSTED)
    sink = Sink()
    sessions = MaillogSessions(no_policy, sink)
    logfile = LogFile(path, tmp_path / "pos", start_at_end=False)
    follower = FileFollower(logfile, sessions, interval=0.01)
    caplog.set_level(logging.WARNING)
    await follower.start()
    with path.open("ab") as fh:
        fh.write(JUNK[junk] + UNTRUSTED)
    try:
        await until(lambda: len(sink.events) >= 2)
    finally:
        await follower.stop()
    assert domains(sink) == ["may-trusted.example.test", "may-untrusted.example.test"]
    assert sessions.counters.skipped == 1
    assert sessions.counters.not_understood == 0  # no piece of the junk was taken for a line
    assert "event=maillog-skipped" in caplog.text
    # the position is past the junk: a restart reads nothing again
    again = Sink()
    restarted = MaillogSessions(no_policy, again)
    follower = FileFollower(LogFile(path, tmp_path / "pos"), restarted, interval=0.01)
    await follower.start()
    await follower.stop()
    assert again.events == [] and restarted.counters.skipped == 0


async def test_file_follower_keeps_a_line_written_right_after_nuls(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_bytes(b"")
    sink = Sink()
    sessions = MaillogSessions(no_policy, sink)
    follower = FileFollower(LogFile(path, tmp_path / "pos"), sessions, interval=0.01)
    await follower.start()
    first, rest = UNTRUSTED.split(b"\n", 1)
    with path.open("ab") as fh:  # the lines after the crash start right after the NULs
        fh.write(b"\0" * 300_000 + first + b"\n" + rest)
    try:
        await until(lambda: len(sink.events) >= 1)
    finally:
        await follower.stop()
    assert domains(sink) == ["may-untrusted.example.test"]
    assert sessions.counters.lines == len(UNTRUSTED.splitlines())


def _entries() -> list[dict[str, str]]:
    messages = [ln.split(": ", 1)[1] for ln in UNTRUSTED.decode().splitlines()]
    return [
        {
            "__CURSOR": f"c{i}",
            "__REALTIME_TIMESTAMP": "1795435200000000",
            "_HOSTNAME": "relay",
            "SYSLOG_IDENTIFIER": "postfix/smtp",
            "_PID": "77",
            "MESSAGE": message,
        }
        for i, message in enumerate(messages)
    ]


async def test_journal_follower_skips_an_overlong_record_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "journal.jsonl"
    huge = {"__CURSOR": "huge", "__REALTIME_TIMESTAMP": "1", "MESSAGE": "\0" * (3 << 20)}
    with data.open("w") as fh:
        for entry in [huge, *_entries()]:
            fh.write(json.dumps(entry) + "\n")
    script = tmp_path / "bin" / "journalctl"
    script.parent.mkdir()
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import sys, time
            sys.stdout.write(open({str(data)!r}).read())
            sys.stdout.flush()
            time.sleep(60)
            """
        )
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    sink = Sink()
    sessions = MaillogSessions(no_policy, sink)
    follower = JournalFollower(sessions, tmp_path / "cursor")
    caplog.set_level(logging.WARNING)
    await follower.start()
    try:
        await until(lambda: len(sink.events) >= 1)
    finally:
        await follower.stop()
    assert domains(sink) == ["may-untrusted.example.test"]
    assert sessions.counters.skipped == 1
    assert sessions.counters.not_understood == 0  # the record's tail was not read as a line
    assert "event=maillog-skipped" in caplog.text
