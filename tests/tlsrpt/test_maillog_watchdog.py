"""The log follower says when it reads nothing (issue 12 item 1): an unreadable source is an
ERROR and a counted read error, a silence longer than `maillog.silence_alert` is an ERROR and
the `maillog_silent` metric; journalctl's stderr is never thrown away."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest

from mta_sts_policyd import metrics
from mta_sts_policyd.tlsrpt.maillog.file_follower import FileFollower, LogFile
from mta_sts_policyd.tlsrpt.maillog.journal_follower import JournalFollower
from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions
from mta_sts_policyd.tlsrpt.maillog.watchdog import MaillogWatchdog
from mta_sts_policyd.tlsrpt.model import SessionEvent

# What journalctl (systemd 252) prints when the user may not read other units' entries.
HINT = """\
Hint: You are currently not seeing messages from other users and the system.
      Users in groups 'adm', 'systemd-journal' can see all messages.
      Pass -q to turn off this notice."""


class Sink:
    def submit(self, event: SessionEvent) -> None:
        raise AssertionError("no sessions expected")


def sessions() -> MaillogSessions:
    return MaillogSessions(lambda domain, when: None, Sink())


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_silence_is_an_error_once_and_a_metric(caplog: pytest.LogCaptureFixture) -> None:
    clock, count = Clock(), [0]
    dog = MaillogWatchdog(lambda: count[0], source="journal", silence_after=600, clock=clock)
    metrics.bind_maillog(dog)
    caplog.set_level(logging.INFO)
    clock.now += 599
    dog.check()
    assert not dog.silent and metrics.MAILLOG_SILENT.read() == 0
    clock.now += 1
    dog.check()
    dog.check()
    assert dog.silent and metrics.MAILLOG_SILENT.read() == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split()[0] for r in errors] == ["event=maillog-silent"]
    count[0] = 3
    clock.now += 5
    dog.check()
    assert not dog.silent and dog.last_line_at == clock.now
    assert metrics.MAILLOG_LINES.read() == 3
    assert metrics.MAILLOG_LAST_LINE.read() == clock.now
    assert "event=maillog-reading-again source=journal" in caplog.text


def test_silence_check_off_with_zero() -> None:
    clock = Clock()
    dog = MaillogWatchdog(lambda: 0, source="journal", silence_after=0, clock=clock)
    clock.now += 10**7
    dog.check()
    assert not dog.silent


async def test_journalctl_permission_hint_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stand-in journalctl that, like the real one for a user without journal access, prints
    nothing on stdout and its hint on stderr."""
    script = tmp_path / "bin" / "journalctl"
    script.parent.mkdir()
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, time
        print({HINT!r}, file=sys.stderr, flush=True)
        time.sleep(60)
        """))  # fmt: skip
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    feed = sessions()
    dog = MaillogWatchdog(lambda: feed.counters.lines, source="journal", silence_after=3600)
    follower = JournalFollower(feed, tmp_path / "cursor", on_message=dog.follower_message)
    await follower.start()
    for _ in range(500):
        if dog.read_errors:
            break
        await asyncio.sleep(0.01)
    await follower.stop()
    assert dog.read_errors == 1
    assert "event=maillog-unreadable source=journal reason='Hint: You are currently" in caplog.text
    assert "can see all messages" in caplog.text  # the rest is logged too (as warnings)


async def test_unreadable_log_file_is_an_error_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mail.log"
    path.mkdir()  # a directory cannot be read as a file (root ignores file permissions)
    dog = MaillogWatchdog(lambda: 0, source=str(path), silence_after=3600)
    follower = FileFollower(LogFile(path, tmp_path / "pos"), sessions(), on_error=dog.unreadable)
    for _ in range(3):
        assert await follower.poll() == 0
    assert dog.read_errors == 1
    assert f"event=maillog-unreadable source={path}" in caplog.text
