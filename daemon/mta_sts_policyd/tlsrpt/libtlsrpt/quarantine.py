"""The collector's counters and its quarantine of rejected datagrams (kept for inspection)."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mta_sts_policyd.errors import ConfigError

log = logging.getLogger("mta_sts_policyd.tlsrpt.libtlsrpt.collector")


@dataclass
class CollectorStats:
    """Counters for metrics. Each field has a single writer thread, so reads need no lock."""

    received: int = 0
    rejected: int = 0
    events_submitted: int = 0
    """Sessions handed to the sink (sum of SessionEvent.count: identical datagrams are merged)."""
    oversized: int = 0
    backlog_dropped: int = 0
    """Dropped by the receiver because the daemon fell `max_backlog_bytes` behind."""
    sink_errors: int = 0
    processed: int = 0
    recv_priority: str = "unknown"
    """What the receiver process got: realtime (SCHED_FIFO), nice-10 or normal."""
    receiver_restarts: int = 0
    anomalies: Counter[str] = field(default_factory=Counter)


class Quarantine:
    """Append-only JSON-lines file of rejected datagrams, at most `max_bytes` on disk in total.

    Two generations (`path` and `path.1`) of max_bytes/2 each: when the current file would grow
    past half the cap it replaces the old generation. Write errors are logged, never raised.
    """

    def __init__(self, path: str | Path, max_bytes: int = 10 * 1024 * 1024) -> None:
        if max_bytes < 4096:
            raise ConfigError("tlsrpt quarantine max_bytes must be at least 4096")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0

    def add(
        self, at: float, reason: str, data: bytes, size: int | None = None, count: int = 1
    ) -> None:
        """One line per distinct datagram; `count` says how often it came in one batch window."""
        keep = data[: self.max_bytes // 8]
        record: dict[str, object] = {"at": round(at, 3), "reason": reason}
        record["size"] = size or len(data)
        record["count"] = count
        record["data_b64"] = base64.b64encode(keep).decode("ascii")
        line = (json.dumps(record) + "\n").encode("utf-8")
        try:
            if self._fd is None or self._size + len(line) > self.max_bytes // 2:
                self._rotate()
            assert self._fd is not None
            self._size += os.write(self._fd, line)
        except OSError as exc:
            log.warning("event=tlsrpt-quarantine-failed path=%s reason=%r", self.path, exc)

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
