"""Drop-in for tlsrpt-collectd: receive libtlsrpt datagrams on a unix DATAGRAM socket.

Postfix sends with MSG_DONTWAIT, and the kernel queues only net.unix.max_dgram_qlen (default 10)
datagrams per receiving socket, so at 10k datagrams/s any receiver stall over ~1 ms loses data
(the sender gets EAGAIN; SO_RCVBUF does not help for unix datagrams, it is set anyway). A recv
thread inside the daemon stalls exactly so, waiting for the GIL or a CPU. Hence:

* the daemon binds the socket and hands it to receiver.py, a child process with its own
  interpreter that only receives and forwards batches over a pipe (optionally SCHED_FIFO);
* the ingest thread here wakes every `batch_interval`, hands what arrived to ingest.py (which
  merges identical datagrams of one UTC day into one event with a count, parses, submits to the
  EventSink, which never blocks on disk, and quarantines what cannot be parsed), and restarts
  the receiver if it dies.
Measurements: bench/tlsrpt_ingest.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.net.unix_socket import BoundUnixSocket, bind_unix_socket
from mta_sts_policyd.tlsrpt.libtlsrpt import receiver
from mta_sts_policyd.tlsrpt.libtlsrpt.ingest import DatagramIngest, Item
from mta_sts_policyd.tlsrpt.libtlsrpt.quarantine import CollectorStats, Quarantine
from mta_sts_policyd.tlsrpt.model import EventSink

__all__ = ["CollectorStats", "Quarantine", "TlsRptCollector"]

log = logging.getLogger(__name__)

FLUSH_BYTES = 256 * 1024
"""The receiver also writes to the pipe when this much is waiting (besides every flush_interval)."""


class TlsRptCollector:
    """Serve `smtp_tlsrpt_socket_name`; every parsed policy becomes one SessionEvent in `sink`.

    The daemon binds the socket (mode, group, stale-socket handling) and keeps it; receiver.py,
    started as a child process with the socket's descriptor, does the recv loop and forwards
    batches over a pipe; the "tlsrpt-ingest" thread here decodes, parses and submits them, and
    restarts the receiver (ERROR in the log, `stats.receiver_restarts`) if it ever dies.
    """

    def __init__(
        self,
        path: str | Path,
        sink: EventSink,
        *,
        mode: int = 0o660,
        group: str | int | None = None,
        quarantine: Quarantine | None = None,
        max_datagram: int = 256 * 1024,
        max_backlog_bytes: int = 64 * 1024 * 1024,
        rcvbuf: int = 4 * 1024 * 1024,
        realtime_recv: bool = True,
        batch_interval: float = 0.1,
        flush_interval: float = 0.005,
        start_timeout: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.stats = CollectorStats()
        self._sink = sink
        self._mode = mode
        self._group = group
        self._quarantine = quarantine
        self._max_datagram = max_datagram
        self._max_backlog_bytes = max_backlog_bytes
        self._rcvbuf = rcvbuf
        self._realtime_recv = realtime_recv
        self._batch_interval = batch_interval
        self._flush_interval = flush_interval
        self._start_timeout = start_timeout
        self._sock: socket.socket | None = None
        self._bound: BoundUnixSocket | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._start_error: OSError | None = None
        self._ingest = DatagramIngest(sink, self.stats, quarantine, max_datagram)

    @property
    def receiver_pid(self) -> int | None:
        """The receiver process now running, if any (for tests and diagnostics)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (replacing a stale one), start the receiver and the ingest thread."""
        self._sock = self._bind()
        self._thread = threading.Thread(target=self._ingest_loop, name="tlsrpt-ingest", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            log.warning(
                "event=tlsrpt-receiver-slow-start hint=%r", "the kernel queues datagrams meanwhile"
            )
        if self._start_error is not None:
            self._thread.join()
            self._sock.close()
            self._sock = None
            self._unlink()
            raise ConfigError(f"tlsrpt receiver not started: {self._start_error}")
        log.info(
            "event=tlsrpt-collector-listening path=%s priority=%s",
            self.path,
            self.stats.recv_priority,
        )

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop receiving, process everything already received; True if fully drained in time."""
        if self._sock is None or self._thread is None:
            return True
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with contextlib.suppress(OSError):
            # Wakes the receiver's recv once the queue is empty; senders get EPIPE from now on.
            self._sock.shutdown(socket.SHUT_RD)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        drained = not self._thread.is_alive()
        if not drained:
            self._kill_receiver()  # stuck: its pipe closes, the ingest thread ends
            self._thread.join(1.0)
        self._sock.close()
        self._sock = None
        self._unlink()
        if self._quarantine is not None and not self._thread.is_alive():
            self._quarantine.close()
        return drained

    def _bind(self) -> socket.socket:
        self._bound = bind_unix_socket(
            self.path,
            socket.SOCK_DGRAM,
            mode=self._mode,
            group=self._group,
            what="tlsrpt socket",
            rcvbuf=self._rcvbuf,
            make_parent=True,
        )
        return self._bound.sock

    def _unlink(self) -> None:
        if self._bound is not None:
            self._bound.remove_file()
            self._bound = None

    # -- the receiver process -------------------------------------------------------------

    def _spawn(self) -> int:
        """Start receiver.py on our socket; return the read end of its pipe."""
        assert self._sock is not None
        if not sys.executable:
            raise OSError("no Python interpreter path (sys.executable) to run the receiver")
        sock_fd = self._sock.fileno()
        read_fd, write_fd = os.pipe()  # both close-on-exec: no other child keeps it open
        try:
            args = [sys.executable, "-I", "-S", receiver.__file__, str(sock_fd), str(write_fd)]
            args += [str(os.getpid()), str(self._max_datagram), str(FLUSH_BYTES)]
            args += [str(self._max_backlog_bytes), repr(self._flush_interval)]
            args += ["1" if self._realtime_recv else "0"]
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(sock_fd, write_fd),
            )
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        return read_fd

    def _ingest_loop(self) -> None:
        """Runs the receiver (this thread spawns it: PR_SET_PDEATHSIG follows the spawning
        thread) and pumps its stream until stop(); restarts it with back-off if it dies."""
        failures = 0
        while True:
            began = time.monotonic()
            try:
                read_fd = self._spawn()
            except OSError as exc:
                if not self._ready.is_set():
                    self._start_error = exc
                    self._ready.set()
                    return
                log.error("event=tlsrpt-receiver-not-restarted reason=%r", exc)
            else:
                try:
                    self._pump(read_fd)
                except Exception:  # a bug here must not end ingestion for good
                    log.exception("event=tlsrpt-ingest-failed action=restart")
                    self._kill_receiver()
                code = self._reap()
                if not self._ready.is_set():  # it never said hello: it cannot run at all
                    self._start_error = OSError(f"receiver exited with status {code}")
                    self._ready.set()
                    return
                if self._stopping.is_set():
                    return
                self.stats.receiver_restarts += 1
                log.error("event=tlsrpt-receiver-exited status=%s action=restart", code)
            failures = failures + 1 if time.monotonic() - began < 1.0 else 0
            if self._stopping.wait(min(5.0, 0.05 * 2**failures)):
                return

    def _kill_receiver(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()

    def _reap(self) -> int | None:
        assert self._proc is not None
        try:
            return self._proc.wait(5.0)
        except subprocess.TimeoutExpired:  # closed its pipe yet lives on: replace it
            self._proc.kill()
            return self._proc.wait()

    # -- ingest thread: decode, parse, submit, quarantine -------------------------------------

    def _pump(self, read_fd: int) -> None:
        """Read the receiver's stream until it ends; process it every `batch_interval`.

        Waking per datagram would cost more CPU than parsing it; the nap lets a window fill so
        identical datagrams are counted once (SessionEvent.count), while the receiver keeps
        emptying the socket and its batches wait in the pipe.
        """
        buf = bytearray()
        readable = select.poll()  # not select(): the daemon may hold more than 1024 fds
        readable.register(read_fd, select.POLLIN)
        try:
            while True:
                readable.poll()
                eof = receiver.read_available(read_fd, buf)
                items = self._decode(buf)
                if items:
                    self._ingest.process(items)
                if eof:
                    return
                if self._batch_interval > 0:
                    self._stopping.wait(self._batch_interval)
        finally:
            os.close(read_fd)

    def _decode(self, buf: bytearray) -> list[Item]:
        records, notices = receiver.decode(buf)
        for text in notices:
            self._notice(text)
        self.stats.received += len(records)
        return [(at, data if real == len(data) else (data, real)) for at, data, real in records]

    def _notice(self, text: str) -> None:
        word, _, arg = text.partition(" ")
        if word == "hello":
            self.stats.recv_priority = arg
            self._ready.set()
        elif word == "dropped":
            self.stats.received += int(arg)
            self.stats.backlog_dropped += int(arg)
            log.warning("event=tlsrpt-datagrams-dropped count=%s reason=backlog", arg)
