"""Follow Postfix's mail log file into `MaillogSessions` (the journal: journalfollow.py).

File: polled, which survives every rotation style. Rotation by rename is seen as a new inode at
the path: the old file is read to its end first. copytruncate is seen as the file shrinking
below our offset, or its first line changing. The position (inode, offset, SHA-256 of the first
line) is saved in the state dir after each poll, so a restart resumes where it stopped; if the
file was rotated meanwhile, the rotated file (same directory, name starting with the log's name,
same inode) is read to its end first. Only complete lines are consumed; a partial last line
waits for its newline. After a crash at most one poll's lines may be counted again; after
`stop()` none.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions

READ_LIMIT = 4 << 20
"""Bytes read per poll at most (a huge backlog is worked off over several polls)."""
HEAD_LIMIT = 64 << 10


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
                return _split(fh.read(), final=True)[0]
        return []

    def _drain(self, *, final: bool) -> list[str]:
        assert self._fh is not None and self._pos is not None
        self._fh.seek(self._pos.offset)
        data = self._fh.read(READ_LIMIT)
        lines, used = _split(data, final=final)
        self._pos.offset += used
        if self._pos.head is None and used:
            self._pos.head = _head_of(self._fh)
        return lines


def _split(data: bytes, *, final: bool) -> tuple[list[str], int]:
    """Complete lines of `data` and the bytes they use; `final` also takes a last partial one."""
    end = len(data) if final else data.rfind(b"\n") + 1
    chunk = data[:end]
    lines = chunk.decode("utf-8", "replace").splitlines()
    return [ln for ln in lines if ln], end


class FileFollower:
    """Polls a `LogFile` and feeds `sessions`, from an asyncio task."""

    def __init__(
        self,
        logfile: LogFile,
        sessions: MaillogSessions,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.logfile = logfile
        self.sessions = sessions
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fix the starting position now (a first poll), then keep polling in a task."""
        await self.poll()
        self._task = asyncio.create_task(self._run(), name="maillog-file")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.poll()  # what arrived until now, then the final position
        self.logfile.close()

    async def poll(self) -> int:
        """Read and feed what is new; returns the number of lines."""
        lines = await asyncio.to_thread(self.logfile.read_lines)
        now = self.clock()
        for line in lines:
            self.sessions.feed_line(line, now)
        await asyncio.to_thread(self.logfile.commit)
        return len(lines)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll()
