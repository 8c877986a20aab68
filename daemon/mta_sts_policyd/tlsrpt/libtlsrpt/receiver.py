"""The TLS-RPT datagram receiver: a tiny process that only empties the collector's socket.

Postfix sends libtlsrpt datagrams with MSG_DONTWAIT and the kernel queues only
net.unix.max_dgram_qlen (default 10) per socket, so at 10k datagrams/s any stall over ~1 ms of
whoever calls recv loses data. Inside the daemon that caller waits for the GIL behind the event
loop, parse and store threads; here it has its own interpreter, a blocking recv loop, and nothing
else (bench/tlsrpt_ingest.md). Run by collector.py as a script (`python -I -S receiver.py ...`):
stdlib only, no package import, so it starts in a few ms however the daemon is installed.

Stream to the daemon (a pipe), records of HEADER (kept, size, at) + `kept` bytes:
* a datagram: kept = bytes forwarded, size = its real size (size > kept: cut at max_datagram),
  at = receive time (time.time());
* a notice: size = NOTICE, the payload is ASCII "hello <priority>" or "dropped <n>".
Records are written every `flush_interval` or `flush_bytes`, non-blocking: when the daemon
falls behind they wait here, up to `max_pending` bytes; beyond that datagrams are counted and
dropped, so this loop never blocks on the daemon. It ends when the socket is shut down (the
daemon's stop(): flush everything, exit 0) or the daemon dies (PR_SET_PDEATHSIG, EPIPE, or a
changed parent pid seen on an idle wake-up).
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import struct
import sys
import time

HEADER = struct.Struct("<IId")
NOTICE = 0xFFFFFFFF
SCHED_ATTR = struct.Struct("IIQiI")
"""struct sched_attr up to sched_priority; sched_runtime, deadline, period, util_min/max follow."""
RDHUP = getattr(select, "POLLRDHUP", 0x2000)
IDLE_CHECK = 1.0
"""Seconds between parent-alive checks while idle (PR_SET_PDEATHSIG is the fast path)."""


def encode_datagram(at: float, data: bytes, size: int) -> bytes:
    """One datagram record (the hot loop in receive() inlines this)."""
    return HEADER.pack(len(data), size, at) + data


def encode_notice(text: str) -> bytes:
    payload = text.encode("ascii")
    return HEADER.pack(len(payload), NOTICE, 0.0) + payload


def raise_priority(realtime: bool) -> str:
    """Be scheduled within microseconds of a datagram's arrival, as far as permitted.

    `realtime`: SCHED_FIFO at the lowest real-time priority (root, CAP_SYS_NICE or
    RLIMIT_RTPRIO >= 1), else nice -10 (CAP_SYS_NICE or RLIMIT_NICE). The loop only blocks in
    recv or copies bytes, so it cannot starve the machine. Always, unprivileged: a 0.1 ms EEVDF
    slice (Linux >= 6.12), which lets the woken receiver preempt a CPU-bound task sooner.
    """
    got = []
    if realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return "realtime"
        except (AttributeError, OSError):
            pass
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
            got.append("nice-10")
        except OSError:
            pass
    if _short_slice(100_000):
        got.append("slice")
    return "+".join(got) or "normal"


def _short_slice(nanoseconds: int) -> bool:
    """sched_setattr(2) with sched_runtime for SCHED_OTHER; True if the kernel kept it."""
    numbers = {"x86_64": (314, 315), "aarch64": (274, 275)}.get(os.uname().machine)
    if numbers is None:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        attr = SCHED_ATTR.pack(SCHED_ATTR.size + 32, 0, 0, os.getpriority(os.PRIO_PROCESS, 0), 0)
        attr += struct.pack("QQQII", nanoseconds, 0, 0, 0, 0)
        if libc.syscall(numbers[0], 0, ctypes.c_char_p(attr), 0) != 0:
            return False
        out = ctypes.create_string_buffer(SCHED_ATTR.size + 32)
        if libc.syscall(numbers[1], 0, out, len(out), 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return bool(struct.unpack_from("Q", out.raw, SCHED_ATTR.size)[0] == nanoseconds)


def die_with_parent(parent: int) -> None:
    """Get SIGKILL when the daemon's thread that started us ends (Linux), or exit right away."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the idle parent-pid check and EPIPE remain
    if os.getppid() != parent:
        sys.exit(0)


class Forwarder:
    """Batches records and writes them to the daemon's pipe without ever blocking."""

    def __init__(self, fd: int, max_pending: int) -> None:
        self.fd = fd
        self.max_pending = max_pending
        self.out = bytearray()
        self.dropped = 0
        os.set_blocking(fd, False)
        try:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        except (ImportError, AttributeError, OSError):
            pass  # the default 64 KiB pipe: more waits here, nothing lost

    def notice(self, text: str) -> None:
        self.out += encode_notice(text)

    def flush(self) -> None:
        """Write what the pipe takes now; a BrokenPipeError (daemon gone) ends the process."""
        if self.dropped and len(self.out) < self.max_pending:
            self.notice(f"dropped {self.dropped}")
            self.dropped = 0
        if self.out:
            try:
                written = os.write(self.fd, self.out)
            except BlockingIOError:
                return
            del self.out[:written]

    def drain(self) -> None:
        """At shutdown: everything still here goes out, blocking."""
        os.set_blocking(self.fd, True)
        if self.dropped:
            self.notice(f"dropped {self.dropped}")
            self.dropped = 0
        view = memoryview(self.out)
        while view:
            view = view[os.write(self.fd, view) :]


def set_timeout(sock: socket.socket, seconds: float) -> None:
    """SO_RCVTIMEO, not Python's socket timeout: that would add a poll() to every recv."""
    sec = int(seconds)
    usec = int((seconds - sec) * 1e6)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, usec))


def receive(
    sock: socket.socket,
    fwd: Forwarder,
    parent: int,
    max_datagram: int,
    flush_interval: float,
    flush_bytes: int,
) -> None:
    """The hot loop: one blocking recv per datagram, one append, a write every few ms."""
    scratch = bytearray(max_datagram)
    view = memoryview(scratch)
    recv_into, pack, clock = sock.recv_into, HEADER.pack, time.time
    out = fwd.out
    first = 0.0
    set_timeout(sock, IDLE_CHECK)
    while True:
        try:
            size = recv_into(scratch, max_datagram, socket.MSG_TRUNC)
        except BlockingIOError:  # SO_RCVTIMEO: time to flush, or to look for the parent
            if os.getppid() != parent:
                return
            fwd.flush()
            set_timeout(sock, flush_interval if out else IDLE_CHECK)
            continue
        now = clock()
        if size == 0 and _shut_down(sock):
            return
        if not out:
            first = now
            set_timeout(sock, flush_interval)
        if len(out) < fwd.max_pending:
            kept = size if size <= max_datagram else max_datagram
            out += pack(kept, size, now)
            out += view[:kept]
        else:
            fwd.dropped += 1
        if now - first >= flush_interval or len(out) >= flush_bytes or now < first:
            fwd.flush()
            first = now
            if not out:
                set_timeout(sock, IDLE_CHECK)


def _shut_down(sock: socket.socket) -> bool:
    """An empty read is an empty datagram, unless the daemon shut the socket down (its stop()):
    then the queue is empty and poll() reports RDHUP."""
    poller = select.poll()
    poller.register(sock, RDHUP)
    return any(mask & RDHUP for _, mask in poller.poll(0))


# -- the daemon's side of the stream (collector.py) -------------------------------------------


def read_available(fd: int, buf: bytearray, limit: int = 16 << 20) -> bool:
    """Append what the pipe holds now (up to `limit` bytes); True at end of stream."""
    os.set_blocking(fd, False)
    got = 0
    while got < limit:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        buf += chunk
        got += len(chunk)
    return False


def decode(buf: bytearray) -> tuple[list[tuple[float, bytes, int]], list[str]]:
    """Take the complete records out of `buf`: datagrams as (time, bytes, real size), and
    notices; a partial record stays in `buf` for the next read."""
    records: list[tuple[float, bytes, int]] = []
    notices: list[str] = []
    unpack, size = HEADER.unpack_from, HEADER.size
    pos, end = 0, len(buf)
    with memoryview(buf) as view:
        while end - pos >= size:
            kept, real, at = unpack(view, pos)
            stop = pos + size + kept
            if stop > end:
                break
            data = bytes(view[pos + size : stop])
            pos = stop
            if real == NOTICE:
                notices.append(data.decode("ascii", "replace"))
            else:
                records.append((at, data, real))
    del buf[:pos]
    return records, notices


def main(argv: list[str]) -> int:
    sock_fd, pipe_fd, parent = int(argv[0]), int(argv[1]), int(argv[2])
    max_datagram, flush_bytes, max_pending = int(argv[3]), int(argv[4]), int(argv[5])
    flush_interval, realtime = float(argv[6]), argv[7] == "1"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # Ctrl-C and systemd's stop signal to the whole cgroup must not cut the daemon's drain.
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(parent)
    gc.disable()  # no cycles are ever made here; a collection would be a stall
    sock = socket.socket(fileno=sock_fd)
    fwd = Forwarder(pipe_fd, max_pending)
    fwd.notice(f"hello {raise_priority(realtime)}")
    fwd.flush()
    try:
        receive(sock, fwd, parent, max_datagram, flush_interval, flush_bytes)
        fwd.drain()
    except BrokenPipeError:
        return 0  # the daemon is gone; nobody to hand anything to
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
