"""Drop-in for tlsrpt-collectd: receive libtlsrpt datagrams on a unix DATAGRAM socket.

Postfix sends with MSG_DONTWAIT, and the kernel queues only net.unix.max_dgram_qlen (default 10)
datagrams per receiving socket, so at 10k datagrams/s any receiver stall over ~1 ms loses data
(the sender gets EAGAIN; SO_RCVBUF does not help for unix datagrams, it is set anyway). Hence:

* a receive thread that only blocks in recv and puts (time, bytes) on a SimpleQueue;
* a parse thread that wakes every `batch_interval`, merges identical datagrams of one UTC day
  into one event with a count, decodes (datagram.py), submits to the EventSink (which never
  blocks on disk) and quarantines what cannot be parsed;
* a shorter interpreter switch interval (default 0.5 ms instead of 5 ms), because a receive
  thread waiting for the GIL behind a busy thread is exactly the stall that loses datagrams;
* optionally (`realtime_recv`, needs CAP_SYS_NICE) SCHED_FIFO for the receive thread.
Measurements: bench/tlsrpt_ingest.md.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import json
import logging
import os
import socket
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, SimpleQueue

from mta_sts_policyd.errors import ConfigError, DatagramError
from mta_sts_policyd.tlsrpt.datagram import ParsedDatagram, parse_datagram_full
from mta_sts_policyd.tlsrpt.model import EventSink, SessionEvent

log = logging.getLogger(__name__)

_Item = tuple[float, bytes | tuple[bytes, int]]
"""(receive time, datagram), or (receive time, (head, real size)) when it was too big."""


@dataclass
class CollectorStats:
    """Counters for metrics. Each field has a single writer thread, so reads need no lock."""

    received: int = 0
    rejected: int = 0
    events_submitted: int = 0
    """Sessions handed to the sink (sum of SessionEvent.count: identical datagrams are merged)."""
    oversized: int = 0
    backlog_dropped: int = 0
    sink_errors: int = 0
    processed: int = 0
    recv_priority: str = "normal"
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
            log.warning("tlsrpt quarantine %s: %s", self.path, exc)

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


class TlsRptCollector:
    """Serve `smtp_tlsrpt_socket_name`; every parsed policy becomes one SessionEvent in `sink`."""

    def __init__(
        self,
        path: str | Path,
        sink: EventSink,
        *,
        mode: int = 0o660,
        group: str | int | None = None,
        quarantine: Quarantine | None = None,
        max_datagram: int = 256 * 1024,
        max_backlog: int = 100_000,
        rcvbuf: int = 4 * 1024 * 1024,
        switch_interval: float | None = 0.0005,
        realtime_recv: bool = False,
        batch_interval: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.stats = CollectorStats()
        self._sink = sink
        self._mode = mode
        self._group = group
        self._quarantine = quarantine
        self._max_datagram = max_datagram
        self._max_backlog = max_backlog
        self._rcvbuf = rcvbuf
        self._switch_interval = switch_interval
        self._realtime_recv = realtime_recv
        self._batch_interval = batch_interval
        self._clock = clock
        self._queue: SimpleQueue[_Item | None] = SimpleQueue()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._cache: dict[bytes, ParsedDatagram | DatagramError] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and start the receive and parse threads."""
        self._sock = self._bind()
        if self._switch_interval is not None:
            sys.setswitchinterval(min(sys.getswitchinterval(), self._switch_interval))
        self._threads = [
            threading.Thread(target=self._recv_loop, name="tlsrpt-recv", daemon=True),
            threading.Thread(target=self._parse_loop, name="tlsrpt-parse", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("tlsrpt collector listening on %s", self.path)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop receiving, process everything already received; True if fully drained in time."""
        if self._sock is None:
            return True
        deadline = time.monotonic() + timeout
        self._stopping = True
        with contextlib.suppress(OSError):
            # Wakes the blocked recv; queued datagrams are still returned first, senders get EPIPE.
            self._sock.shutdown(socket.SHUT_RD)
        recv_thread, parse_thread = self._threads
        recv_thread.join(max(0.0, deadline - time.monotonic()))
        self._queue.put(None)
        parse_thread.join(max(0.0, deadline - time.monotonic()))
        self._sock.close()
        self._sock = None
        self._unlink()
        if self._quarantine is not None and not parse_thread.is_alive():
            self._quarantine.close()
        return not (recv_thread.is_alive() or parse_thread.is_alive())

    def _bind(self) -> socket.socket:
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind(str(self.path))
            os.chmod(self.path, self._mode)
            if self._group is not None:
                gid = (
                    self._group
                    if isinstance(self._group, int)
                    else grp.getgrnam(self._group).gr_gid
                )
                os.chown(self.path, -1, gid)
        except (OSError, KeyError) as exc:
            sock.close()
            self._unlink()
            raise ConfigError(f"tlsrpt socket {self.path}: {exc}") from exc
        return sock

    def _remove_stale(self) -> None:
        """Remove a socket file nobody listens on; refuse to touch anything else."""
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ConfigError(f"tlsrpt socket {self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise ConfigError(f"tlsrpt socket {self.path} is in use by another process")

    def _unlink(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("tlsrpt socket %s not removed: %s", self.path, exc)

    # -- receive thread: recv only ----------------------------------------------------------

    def _recv_loop(self) -> None:
        """One blocking recv per datagram, nothing else: no parsing, no polling, no exceptions."""
        assert self._sock is not None
        if self._realtime_recv:
            self.stats.recv_priority = _raise_priority()
        sock, stats, put, clock = self._sock, self.stats, self._queue.put, self._clock
        size, limit = self._max_datagram, self._max_backlog
        buf = bytearray(size)
        view = memoryview(buf)
        while True:
            try:
                n = sock.recv_into(buf, size, socket.MSG_TRUNC)
            except OSError as exc:
                if self._stopping:
                    return
                log.error("tlsrpt recv on %s: %s", self.path, exc)
                time.sleep(0.01)
                continue
            if n == 0 and self._stopping:
                return  # shutdown(): the kernel queue is empty
            stats.received += 1
            if stats.received - stats.processed - stats.backlog_dropped > limit:
                stats.backlog_dropped += 1
            else:
                put((clock(), bytes(view[:n]) if n <= size else (bytes(buf), n)))

    # -- parse thread: decode, submit, quarantine ---------------------------------------------

    def _parse_loop(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        running = True
        while running:
            items = [get()]
            with contextlib.suppress(Empty):
                while True:
                    items.append(get_nowait())
            running = None not in items
            self._process([i for i in items if i is not None])
            if running and self._batch_interval > 0:
                # Waking per datagram costs more CPU than parsing it; a short nap lets the
                # window fill so identical datagrams are counted once (SessionEvent.count).
                time.sleep(self._batch_interval)

    def _process(self, items: list[_Item]) -> None:
        """Group identical datagrams of one UTC day, then parse and submit each group once."""
        groups: dict[tuple[bytes, int], tuple[float, int]] = {}
        for at, item in items:
            if type(item) is tuple:
                head, real = item
                self.stats.oversized += 1
                reason = f"datagram of {real} bytes exceeds {self._max_datagram}"
                self._reject(at, reason, head, real, 1)
                self.stats.processed += 1
                continue
            assert isinstance(item, bytes)
            key = (item, int(at // 86400))
            first = groups.get(key)
            groups[key] = (at, 1) if first is None else (first[0], first[1] + 1)
        for (data, _), (at, n) in groups.items():
            try:
                self._handle(data, at, n)
            except Exception:  # never let one datagram or a sink bug end ingestion
                self.stats.sink_errors += n
                log.exception("tlsrpt: event sink failed")
            self.stats.processed += n

    def _handle(self, data: bytes, at: float, n: int) -> None:
        parsed = self._parse_cached(data, at)
        if isinstance(parsed, DatagramError):
            self._reject(at, parsed.reason, data, len(data), n)
            return
        for anomaly in parsed.anomalies:
            self.stats.anomalies[anomaly] += n
        submit = self._sink.submit
        for event in parsed.events:
            if event.timestamp != at or n != 1:
                event = _restamp(event, at, n)
            submit(event)
            self.stats.events_submitted += event.count

    def _parse_cached(self, data: bytes, at: float) -> ParsedDatagram | DatagramError:
        """Postfix repeats identical datagrams (every success to one MX is the same bytes)."""
        hit = self._cache.get(data)
        if hit is not None:
            return hit
        try:
            result: ParsedDatagram | DatagramError = parse_datagram_full(data, at)
        except DatagramError as exc:
            result = exc
        if len(data) <= 4096:
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[data] = result
        return result

    def _reject(self, at: float, reason: str, data: bytes, size: int, n: int) -> None:
        self.stats.rejected += n
        count = self.stats.rejected
        if count & (count - 1) == 0 or n > 1:  # 1, 2, 4, 8, ...: visible without flooding
            log.warning("tlsrpt: rejected datagram #%d: %s", count, reason)
        if self._quarantine is not None:
            self._quarantine.add(at, reason, data, size, n)


def _restamp(event: SessionEvent, at: float, n: int) -> SessionEvent:
    return SessionEvent(
        at,
        event.report_domain,
        event.policy,
        event.success,
        event.failures,
        event.tlsrpt_record,
        event.count * n,
    )


def _raise_priority() -> str:
    """Let the receive thread preempt ordinary processes (needs CAP_SYS_NICE; else unchanged).

    On a busy MTA the receive thread otherwise waits for a CPU behind TLS handshakes long enough
    for the 10-datagram kernel queue to overflow. It only ever blocks in recv or copies bytes,
    so SCHED_FIFO at the lowest real-time priority cannot starve the machine.
    """
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(1))
        return "realtime"
    except (PermissionError, AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, -10)
        return "nice-10"
    except (PermissionError, OSError):
        return "normal"
