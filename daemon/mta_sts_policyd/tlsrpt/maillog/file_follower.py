"""Follow Postfix's mail log file into `MaillogSessions` (the journal: journalfollow.py).

File: polled, which survives every rotation style. Rotation by rename is seen as a new inode at
the path: the old file is read to its end first. copytruncate is seen as the file shrinking
below our offset, or its first line changing. The position (inode, offset, SHA-256 of the first
line) is saved in the state dir after each poll, so a restart resumes where it stopped; if the
file was rotated meanwhile, the rotated file (same directory, name starting with the log's name,
same inode) is read to its end first. Only complete lines are consumed; a partial last line
waits for its newline. After a crash at most one poll's lines may be counted again; after
`stop()` none.

Junk is skipped, counted and warned about, never waited on: a line longer than LINE_LIMIT (also
one longer than a whole read, skipped through its newline over as many polls as it takes), and
NUL bytes, which syslog never writes but a crash can leave by the megabyte (a NUL ends a line,
so a line written right after such a region is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from mta_sts_policyd.housekeeping import cancel_and_wait
from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions

log = logging.getLogger(__name__)

READ_LIMIT = 4 << 20
"""Bytes read per poll at most (a huge backlog is worked off over several polls)."""
LINE_LIMIT = 1 << 20
"""Longer lines are skipped (Postfix's own lines stay under a few KiB; the journal's limit too)."""
HEAD_LIMIT = 64 << 10
_BREAK = re.compile(rb"\n|\0+")
_NULS = re.compile(rb"\0+")


@dataclass
class FilePosition:
    inode: int
    offset: int
    head: str | None
    """SHA-256 (hex) of the file's first line, None while it has no complete line."""


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace, so a crash leaves the old or the new state, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _head_of(fh: IO[bytes]) -> str | None:
    fh.seek(0)
    first = fh.read(HEAD_LIMIT)
    end = first.find(b"\n")
    return None if end < 0 else hashlib.sha256(first[: end + 1]).hexdigest()


class LogFile:
    """Reads complete new lines of one log file across rotations (synchronous)."""

    def __init__(self, path: Path, state_path: Path, *, start_at_end: bool = True) -> None:
        self.path = path
        self.state_path = state_path
        self.start_at_end = start_at_end
        self.rotations = 0
        self.skipped = 0
        """Over-long lines and NUL regions skipped so far."""
        self._skipping = False
        """Inside a line longer than a whole read: drop bytes through its end."""
        self._in_nuls = False
        """The last read ended inside a NUL region (its continuation is not counted again)."""
        self._fh: IO[bytes] | None = None
        self._pos: FilePosition | None = None

    def read_lines(self) -> list[str]:
        """New complete lines since the last call (rotation handled)."""
        out: list[str] = []
        if self._fh is None and not self._open(out):
            return out
        assert self._fh is not None and self._pos is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None  # renamed away, not recreated yet: keep reading the old file
        if st is not None and st.st_ino != self._pos.inode:
            out += self._drain(final=True)
            self.close()
            self.rotations += 1
            self._open_new()
            if self._fh is None:
                return out
        elif st is not None and self._truncated(st.st_size):
            self._pos.offset, self._pos.head = 0, None
            self._skipping = self._in_nuls = False
            self.rotations += 1
        return out + self._drain(final=False)

    def commit(self) -> None:
        """Persist the position of everything returned so far."""
        if self._pos is not None:
            save_json(self.state_path, asdict(self._pos))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _truncated(self, size: int) -> bool:
        assert self._fh is not None and self._pos is not None
        if size < self._pos.offset:
            return True
        head = _head_of(self._fh) if self._pos.head is not None else None
        return head is not None and head != self._pos.head

    def _open(self, out: list[str]) -> bool:
        """First open: resume from the saved position (reading a rotated predecessor first)."""
        saved = load_json(self.state_path)
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 (kept open across polls)
        except FileNotFoundError:
            return False
        ino, size = os.fstat(self._fh.fileno()).st_ino, os.fstat(self._fh.fileno()).st_size
        pos = FilePosition(**saved) if saved and set(saved) == {"inode", "offset", "head"} else None
        if pos is None:
            offset = self._last_newline(size) if self.start_at_end else 0
            self._pos = FilePosition(ino, offset, _head_of(self._fh))
        elif pos.inode == ino:
            same = pos.head is None or _head_of(self._fh) in (None, pos.head)
            self._pos = pos if same and size >= pos.offset else FilePosition(ino, 0, None)
        else:
            out += self._drain_predecessor(pos)
            self._pos = FilePosition(ino, 0, None)
        return True

    def _open_new(self) -> None:
        self._skipping = self._in_nuls = False
        with contextlib.suppress(FileNotFoundError):
            self._fh = open(self.path, "rb")  # noqa: SIM115
            self._pos = FilePosition(os.fstat(self._fh.fileno()).st_ino, 0, None)

    def _last_newline(self, size: int) -> int:
        assert self._fh is not None
        start = max(0, size - HEAD_LIMIT)
        self._fh.seek(start)
        tail = self._fh.read(size - start)
        cut = tail.rfind(b"\n")
        return start + cut + 1 if cut >= 0 else (0 if start == 0 else size)

    def _drain_predecessor(self, pos: FilePosition) -> list[str]:
        """After a restart: finish the rotated file we were reading, if it is still there."""
        for sibling in sorted(self.path.parent.glob(self.path.name + "?*")):
            with contextlib.suppress(OSError), open(sibling, "rb") as fh:
                if os.fstat(fh.fileno()).st_ino != pos.inode:
                    continue
                if pos.head is not None and _head_of(fh) != pos.head:
                    return []
                fh.seek(pos.offset)
                return self._split(fh.read(), final=True)[0]
        return []

    def _drain(self, *, final: bool) -> list[str]:
        assert self._fh is not None and self._pos is not None
        self._fh.seek(self._pos.offset)
        data = self._fh.read(READ_LIMIT)
        if self._skipping:
            return self._skip_rest(data, final=final)
        lines, used = self._split(data, final=final)
        if not used and len(data) >= READ_LIMIT:  # no line end in a whole read: over-long
            self._skipped(len(data), "over-long line")
            self._skipping, used = True, len(data)
        self._pos.offset += used
        if self._pos.head is None and used:
            self._pos.head = _head_of(self._fh)
        return lines

    def _skip_rest(self, data: bytes, *, final: bool) -> list[str]:
        """Drop the rest of an over-long line through its end, then read on."""
        assert self._pos is not None
        found = _BREAK.search(data)
        if found is None:
            self._pos.offset += len(data)
            self._skipping = not final and len(data) > 0
            return []
        self._pos.offset += found.end()
        self._skipping = False
        return self._drain(final=final)

    def _split(self, data: bytes, *, final: bool) -> tuple[list[str], int]:
        """Complete lines of `data` and the bytes they use; `final` also takes a last partial
        one. NULs end lines; over-long lines and NUL regions are skipped and counted."""
        end = len(data) if final else max(data.rfind(b"\n"), data.rfind(b"\0")) + 1
        chunk = data[:end]
        if b"\0" in chunk:
            for run in _NULS.finditer(chunk):
                if not (run.start() == 0 and self._in_nuls):
                    self._skipped(run.end() - run.start(), "NUL bytes")
        if chunk:
            self._in_nuls = chunk.endswith(b"\0")
        lines: list[str] = []
        for raw in _BREAK.split(chunk):
            if len(raw) > LINE_LIMIT:
                self._skipped(len(raw), "over-long line")
            elif raw:
                lines.extend(ln for ln in raw.decode("utf-8", "replace").splitlines() if ln)
        return lines, end

    def _skipped(self, size: int, what: str) -> None:
        self.skipped += 1
        log.warning(
            "event=maillog-skipped path=%s offset=%d bytes=%d%s reason=%r",
            self.path,
            self._pos.offset if self._pos else 0,
            size,
            "+" if what == "over-long line" and size >= READ_LIMIT else "",
            what,
        )


class FileFollower:
    """Polls a `LogFile` and feeds `sessions`, from an asyncio task."""

    def __init__(
        self,
        logfile: LogFile,
        sessions: MaillogSessions,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.logfile = logfile
        self.sessions = sessions
        self.interval = interval
        self.clock = clock
        self.on_error = on_error
        """Told (once per distinct error) when the file cannot be read, e.g. no permission."""
        self._error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fix the starting position now (a first poll), then keep polling in a task."""
        await self.poll()
        self._task = asyncio.create_task(self._run(), name="maillog-file")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None
        await self.poll()  # what arrived until now, then the final position
        self.logfile.close()

    async def poll(self) -> int:
        """Read and feed what is new; returns the number of lines."""
        skipped = self.logfile.skipped
        try:
            lines = await asyncio.to_thread(self.logfile.read_lines)
        except OSError as exc:  # e.g. PermissionError: nothing can be collected until fixed
            error = f"{self.logfile.path}: {exc.strerror or exc}"
            if error != self._error and self.on_error is not None:
                self.on_error(error)
            self._error = error
            return 0
        self._error = None
        self.sessions.counters.skipped += self.logfile.skipped - skipped
        now = self.clock()
        for line in lines:
            self.sessions.feed_line(line, now)
        await asyncio.to_thread(self.logfile.commit)
        return len(lines)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll()
