"""Follow Postfix's log in the systemd journal into `MaillogSessions`.

Runs `journalctl -f -o json --unit U... --after-cursor C` as a subprocess (no libsystemd
binding needed). The cursor is saved in the state dir every `save_every` seconds and at stop, so
a restart resumes after the last record handled (after a crash, at most `save_every` seconds of
records are read again). journalctl is restarted with the saved cursor if it exits. A record
longer than LINE_LIMIT is skipped through its end, counted and warned about.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mta_sts_policyd.housekeeping import cancel_and_wait
from mta_sts_policyd.tlsrpt.maillog.file_follower import LINE_LIMIT, load_json, save_json
from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions
from mta_sts_policyd.tlsrpt.maillog.syslogline import LogLine

log = logging.getLogger(__name__)


def journal_record(entry: dict[str, Any]) -> LogLine | None:
    """A LogLine from one `journalctl -o json` object; None when fields are missing."""
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # non-UTF-8 messages come as byte arrays
        message = bytes(b & 0xFF for b in message if isinstance(b, int)).decode("utf-8", "replace")
    stamp = entry.get("__REALTIME_TIMESTAMP")
    if not isinstance(message, str) or not isinstance(stamp, str) or not stamp.isdigit():
        return None
    pid = entry.get("SYSLOG_PID") or entry.get("_PID")
    return LogLine(
        timestamp=int(stamp) / 1e6,
        host=str(entry.get("_HOSTNAME", "")),
        program=str(entry.get("SYSLOG_IDENTIFIER", "")),
        pid=int(pid) if isinstance(pid, str) and pid.isdigit() else None,
        message=message,
    )


class JournalFollower:
    """Runs `journalctl -f -o json` and feeds `sessions`; the cursor survives restarts."""

    def __init__(
        self,
        sessions: MaillogSessions,
        cursor_path: Path,
        *,
        units: Sequence[str] = ("postfix*",),
        journalctl: str = "journalctl",
        save_every: float = 1.0,
        restart_delay: float = 5.0,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.cursor_path = cursor_path
        self.units = tuple(units)
        self.journalctl = journalctl
        self.save_every = save_every
        self.restart_delay = restart_delay
        self.restarts = 0
        self.on_message = on_message
        """Gets each line journalctl writes to stderr (e.g. its hint that it may not read other
        users' entries, which means no Postfix line will ever arrive)."""
        self.cursor: str | None = (load_json(cursor_path) or {}).get("cursor")
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        cmd = [self.journalctl, "-f", "-o", "json", "--no-pager"]
        for unit in self.units:
            cmd += ["--unit", unit]
        return cmd + (["--after-cursor", self.cursor] if self.cursor else ["--lines", "0"])

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maillog-journal")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None
        self._save()

    async def _run(self) -> None:
        while True:
            await self._follow_once()
            self.restarts += 1
            await asyncio.sleep(self.restart_delay)

    async def _follow_once(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        assert proc.stdout is not None and proc.stderr is not None
        messages = asyncio.create_task(self._stderr(proc.stderr))
        saved = time.monotonic()
        try:
            while (raw := await _next_line(proc.stdout)) != b"":
                if raw is None:
                    self._skipped()
                    continue
                self._handle(raw)
                if time.monotonic() - saved >= self.save_every:
                    await asyncio.to_thread(self._save)
                    saved = time.monotonic()
        finally:
            if proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(ProcessLookupError):
                    await proc.wait()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(messages, 1)
            self._save()

    async def _stderr(self, stream: asyncio.StreamReader) -> None:
        while raw := await _next_line(stream):
            text = raw.decode("utf-8", "replace").strip()
            if text and self.on_message is not None:
                self.on_message(text)

    def _handle(self, raw: bytes) -> None:
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            self.sessions.counters.lines += 1
            self.sessions.counters.not_understood += 1
            return
        if isinstance(cursor := entry.get("__CURSOR"), str):
            self.cursor = cursor
        record = journal_record(entry)
        if record is None:
            self.sessions.counters.lines += 1
            self.sessions.counters.not_understood += 1
        else:
            self.sessions.feed(record)

    def _skipped(self) -> None:
        self.sessions.counters.skipped += 1
        log.warning(
            "event=maillog-skipped source=journal cursor=%s bytes=%d+ reason='over-long line'",
            self.cursor,
            LINE_LIMIT,
        )

    def _save(self) -> None:
        if self.cursor is not None:
            save_json(self.cursor_path, {"cursor": self.cursor})


async def _next_line(stream: asyncio.StreamReader) -> bytes | None:
    """The next line; b"" at end of stream; None for a line over the stream's limit, which is
    dropped through its newline (no piece of it is returned as a line)."""
    overlong = False
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:  # end of stream
            return b"" if overlong else exc.partial
        except asyncio.LimitOverrunError as exc:  # what is buffered stays: drop it, read on
            await stream.readexactly(exc.consumed)
            overlong = True
            continue
        return None if overlong else line
