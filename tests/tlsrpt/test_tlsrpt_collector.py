"""TlsRptCollector and its receiver process on a real unix datagram socket (docs/conformance.md:
DG-socket)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.errors import ConfigError, SocketInUseError
from mta_sts_policyd.tlsrpt.libtlsrpt.collector import Quarantine, TlsRptCollector
from mta_sts_policyd.tlsrpt.libtlsrpt.datagram import parse_datagram
from mta_sts_policyd.tlsrpt.libtlsrpt.ingest import group_by_day
from mta_sts_policyd.tlsrpt.libtlsrpt.receiver import decode, encode_datagram, encode_notice
from mta_sts_policyd.tlsrpt.model import SessionEvent
from support import TESTS_DIR

FIXTURES = TESTS_DIR / "fixtures" / "datagrams"
SAMPLES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))]

# A paced, non-blocking sender in its own process, as Postfix's smtp(8) with libtlsrpt is. Bursts
# are capped at 4 so a descheduled sender does not catch up with a burst the 10-slot kernel queue
# cannot hold. A datagram refused with EAGAIN is retried and counted: this test is about the
# collector losing nothing it accepted; loss under load is measured by bench/tlsrpt_ingest.py.
SENDER = r"""
import socket, sys, time
path, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
data = [bytes.fromhex(h) for h in sys.argv[4:]]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
eagain = sent = 0
start = time.monotonic()
while sent < count:
    due = min(count, int((time.monotonic() - start) * rate) + 1, sent + 4)
    while sent < due:
        try:
            s.sendto(data[sent % len(data)], socket.MSG_DONTWAIT, path)
            sent += 1
        except BlockingIOError:
            eagain += 1
            time.sleep(0.0005)
    time.sleep(0.0002)
print(eagain)
"""


class ListSink:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def submit(self, event: SessionEvent) -> None:
        self.events.append(event)

    @property
    def sessions(self) -> int:
        """Identical datagrams of one batch window arrive as one event with a count."""
        return sum(e.count for e in self.events)


class GatedSink(ListSink):
    """Blocks the parse thread until opened: lets a test pile datagrams up behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def submit(self, event: SessionEvent) -> None:
        self.gate.wait(10)
        super().submit(event)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "tlsrpt.sock"


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield s
    s.close()


def started(path: Path, sink: ListSink, **kwargs: object) -> TlsRptCollector:
    collector = TlsRptCollector(path, sink, **kwargs)  # type: ignore[arg-type]
    collector.start()
    return collector


def test_thousand_nonblocking_datagrams_are_all_submitted(sock_path: Path) -> None:
    sink = ListSink()
    collector = started(sock_path, sink)
    try:
        args = [str(sock_path), "1000", "5000", *(d.hex() for d in SAMPLES)]
        done = subprocess.run(
            [sys.executable, "-c", SENDER, *args], capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        print("EAGAIN retries:", int(done.stdout))
        wait_for(lambda: collector.stats.processed == 1000)
    finally:
        assert collector.stop(5)
    assert collector.stats.received == 1000
    assert collector.stats.rejected == 0
    expected = [parse_datagram(SAMPLES[i % len(SAMPLES)], 0)[0] for i in range(1000)]
    got = [_restamp0(e) for e in sink.events for _ in range(e.count)]
    assert sorted(map(repr, got)) == sorted(map(repr, expected))
    assert collector.stats.events_submitted == 1000


def _restamp0(event: SessionEvent) -> SessionEvent:
    return SessionEvent(
        0,
        event.report_domain,
        event.policy,
        event.success,
        event.failures,
        event.tlsrpt_record,
        1,
    )


def test_bad_datagrams_never_stop_ingestion_and_are_quarantined(
    sock_path: Path, sender: socket.socket, tmp_path: Path
) -> None:
    sink = ListSink()
    quarantine = Quarantine(tmp_path / "quarantine.jsonl", 1 << 20)
    collector = started(sock_path, sink, quarantine=quarantine)
    bad = [
        SAMPLES[0][:-7],
        b"\xff\xfe\x00",
        b'{"dpv":"1","d":"a.example","policies":[{"policy-type":3,"t":0,"f":0}]}',
        b'{"dpv":"1","d":"a.example","policies":[]}',
        b'{"dpv":"1","d":"a.example","policies":[{"policy-type":"2","t":0,"f":0}]}',
        b"",
    ]
    for data in bad:
        sender.sendto(data, str(sock_path))
        sender.sendto(SAMPLES[1], str(sock_path))
    wait_for(lambda: collector.stats.processed == 2 * len(bad))
    assert collector.stop(5)
    assert sink.sessions == len(bad)
    assert collector.stats.rejected == len(bad)
    lines = [json.loads(x) for x in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert [base64.b64decode(x["data_b64"]) for x in lines] == bad
    assert all(x["reason"] for x in lines)
    assert "policy-type" in lines[2]["reason"]


def test_quarantine_stays_within_max_bytes(
    sock_path: Path, sender: socket.socket, tmp_path: Path
) -> None:
    path = tmp_path / "q.jsonl"
    collector = started(sock_path, ListSink(), quarantine=Quarantine(path, 16_384))
    for i in range(300):
        sender.sendto(b"{not json " + str(i).encode() + b"x" * 1500, str(sock_path))
    wait_for(lambda: collector.stats.processed == 300)
    assert collector.stop(5)
    assert collector.stats.rejected == 300
    sizes = [p.stat().st_size for p in tmp_path.glob("q.jsonl*")]
    assert len(sizes) == 2
    assert sum(sizes) <= 16_384
    last = json.loads(path.read_text().splitlines()[-1])
    assert base64.b64decode(last["data_b64"]).startswith(b"{not json 299")


def test_oversized_datagram_is_rejected_and_counted(
    sock_path: Path, sender: socket.socket, tmp_path: Path
) -> None:
    quarantine = Quarantine(tmp_path / "q", 1 << 20)
    collector = started(sock_path, ListSink(), max_datagram=1024, quarantine=quarantine)
    sender.sendto(b"{" + b" " * 5000 + b"}", str(sock_path))
    sender.sendto(SAMPLES[0], str(sock_path))
    wait_for(lambda: collector.stats.processed == 2)
    assert collector.stop(5)
    assert (
        collector.stats.oversized,
        collector.stats.rejected,
        collector.stats.events_submitted,
    ) == (1, 1, 1)
    record = json.loads((tmp_path / "q").read_text())
    assert record["size"] == 5002
    assert "5002 bytes" in record["reason"]


def test_stop_drains_what_was_received(sock_path: Path, sender: socket.socket) -> None:
    sink = GatedSink()
    collector = started(sock_path, sink)
    for _ in range(200):
        sender.sendto(SAMPLES[0], str(sock_path))  # blocking: each is queued when it returns
    assert sink.sessions == 0
    threading.Timer(0.2, sink.gate.set).start()
    assert collector.stop(10)
    assert sink.sessions == 200
    assert collector.stats.received == 200
    assert not sock_path.exists()
    with pytest.raises(OSError):
        sender.sendto(SAMPLES[0], str(sock_path))


def test_backlog_is_bounded_while_the_sink_is_stuck(sock_path: Path, sender: socket.socket) -> None:
    """The receiver never blocks on a daemon that fell behind: past the pipe (<= 1 MiB) and
    max_backlog_bytes it counts and drops, and says so."""
    sink = GatedSink()
    collector = started(sock_path, sink, max_backlog_bytes=64 * 1024)
    big = SAMPLES[0] + b" " * 60_000  # valid JSON: trailing white space
    for _ in range(300):
        sender.sendto(big, str(sock_path))
    threading.Timer(0.3, sink.gate.set).start()
    assert collector.stop(10)
    stats = collector.stats
    assert stats.backlog_dropped > 200  # at most ~1 MiB pipe + 64 KiB here could wait
    assert stats.received == 300
    assert stats.processed + stats.backlog_dropped == 300
    assert sink.sessions == stats.processed


def test_sink_errors_are_counted_and_ingestion_goes_on(
    sock_path: Path, sender: socket.socket
) -> None:
    class Flaky(ListSink):
        def submit(self, event: SessionEvent) -> None:
            if not event.success:
                raise RuntimeError("store bug")
            super().submit(event)

    sink = Flaky()
    collector = started(sock_path, sink)
    for data in SAMPLES * 3:
        sender.sendto(data, str(sock_path))
    wait_for(lambda: collector.stats.processed == 12)
    assert collector.stop(5)
    assert collector.stats.sink_errors == 6  # two failure samples x 3
    assert sink.sessions == 6


def test_datagrams_are_stamped_when_received(sock_path: Path, sender: socket.socket) -> None:
    sink = ListSink()
    collector = started(sock_path, sink)
    stamps = []
    for expected in (1, 2):
        stamps.append(time.time())
        sender.sendto(SAMPLES[0], str(sock_path))
        wait_for(lambda n=expected: collector.stats.processed == n)  # type: ignore[misc]
        time.sleep(0.05)
    assert collector.stop(5)
    got = [e.timestamp for e in sink.events]
    assert len(got) == 2
    assert stamps[0] <= got[0] < stamps[1] <= got[1] < time.time()


def test_anomalies_are_counted(sock_path: Path, sender: socket.socket) -> None:
    collector = started(sock_path, ListSink())
    sender.sendto(b'{"d":"a.example","policies":[{"policy-type":9,"t":3,"f":0}]}', str(sock_path))
    wait_for(lambda: collector.stats.processed == 1)
    assert collector.stop(5)
    assert collector.stats.anomalies == {"dpv": 1, "t-mismatch": 1}


def test_socket_mode_and_group_are_applied(sock_path: Path) -> None:
    collector = started(sock_path, ListSink(), mode=0o620, group=os.getgid())
    try:
        info = sock_path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o620
        assert info.st_gid == os.getgid()
    finally:
        assert collector.stop(5)
    assert collector.stop(5)  # idempotent


def test_stale_socket_is_replaced(sock_path: Path, sender: socket.socket) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(sock_path))
    stale.close()  # the file stays, nobody listens: a crashed collector
    sink = ListSink()
    collector = started(sock_path, sink)
    sender.sendto(SAMPLES[0], str(sock_path))
    wait_for(lambda: sink.sessions == 1)
    assert collector.stop(5)


def test_live_socket_or_other_file_is_not_touched(sock_path: Path, tmp_path: Path) -> None:
    first = started(sock_path, ListSink())
    try:
        with pytest.raises(SocketInUseError, match="in use"):
            TlsRptCollector(sock_path, ListSink()).start()
    finally:
        assert first.stop(5)
    regular = tmp_path / "plain"
    regular.write_text("keep")
    with pytest.raises(ConfigError, match="not a socket"):
        TlsRptCollector(regular, ListSink()).start()
    assert regular.read_text() == "keep"


def test_unknown_group_is_a_config_error(sock_path: Path) -> None:
    with pytest.raises(ConfigError):
        TlsRptCollector(sock_path, ListSink(), group="no-such-group-tlsrpt").start()


def test_quarantine_rejects_a_useless_cap(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Quarantine(tmp_path / "q", 100)


def test_identical_datagrams_of_one_window_are_one_event_with_a_count(
    sock_path: Path, sender: socket.socket
) -> None:
    sink = ListSink()
    collector = started(sock_path, sink, batch_interval=0.5)
    for _ in range(50):
        sender.sendto(SAMPLES[0], str(sock_path))
    sender.sendto(SAMPLES[2], str(sock_path))
    wait_for(lambda: collector.stats.processed == 51)
    assert collector.stop(5)
    # The ingest thread may take a first window before its 0.5 s nap; the rest is one window.
    assert len(sink.events) <= 4
    assert sink.sessions == 51
    assert collector.stats.events_submitted == 51


def test_identical_datagrams_across_midnight_stay_apart() -> None:
    midnight = 86_400.0 * 20_000
    stamps = [midnight - 0.001, midnight - 0.0005, midnight, midnight + 0.001]
    other = [(midnight + 1, b"other"), (midnight + 2, (b"cut", 9999))]
    items = [(at, SAMPLES[0]) for at in stamps] + other
    assert group_by_day(items) == {  # type: ignore[arg-type]
        (SAMPLES[0], 19_999): (midnight - 0.001, 2),
        (SAMPLES[0], 20_000): (midnight, 2),
        (b"other", 20_000): (midnight + 1, 1),
    }


# -- the receiver process -------------------------------------------------------------------


def test_receiver_reports_its_scheduling_priority(sock_path: Path) -> None:
    collector = started(sock_path, ListSink())
    assert collector.stop(5)
    assert collector.stats.recv_priority in {
        "realtime",
        "nice-10+slice",
        "nice-10",
        "slice",
        "normal",
    }
    plain = started(sock_path, ListSink(), realtime_recv=False)
    assert plain.stop(5)
    assert plain.stats.recv_priority in {"slice", "normal"}  # never real-time unasked


def test_a_dead_receiver_is_restarted_and_logged(
    sock_path: Path, sender: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink()
    collector = started(sock_path, sink)
    try:
        first = collector.receiver_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: collector.receiver_pid not in (None, first), timeout=10)
        sender.sendto(SAMPLES[0], str(sock_path))
        wait_for(lambda: sink.sessions == 1, timeout=10)
    finally:
        assert collector.stop(5)
    assert collector.stats.receiver_restarts == 1
    assert any(
        r.levelname == "ERROR" and "event=tlsrpt-receiver-exited" in r.getMessage()
        for r in caplog.records
    )


def test_receiver_ignores_stop_signals_meant_for_the_daemon(
    sock_path: Path, sender: socket.socket
) -> None:
    """systemd signals the whole cgroup and Ctrl-C the process group: the daemon's stop()
    must still drain through the receiver."""
    sink = ListSink()
    collector = started(sock_path, sink)
    pid = collector.receiver_pid
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        os.kill(pid, sig)
    sender.sendto(SAMPLES[0], str(sock_path))
    wait_for(lambda: sink.sessions == 1)
    assert collector.stop(5)
    assert collector.stats.receiver_restarts == 0


DAEMON = r"""
import sys, time
from mta_sts_policyd.tlsrpt.libtlsrpt.collector import TlsRptCollector
class Sink:
    def submit(self, event): pass
collector = TlsRptCollector(sys.argv[1], Sink())
collector.start()
print(collector.receiver_pid, flush=True)
time.sleep(60)
"""


def test_receiver_exits_when_the_daemon_dies(sock_path: Path) -> None:
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(sock_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert daemon.stdout is not None
        pid = int(daemon.stdout.readline())
        assert _alive(pid)
    finally:
        daemon.kill()
        daemon.wait()
    wait_for(lambda: not _alive(pid), timeout=10)


def _alive(pid: int) -> bool:
    """Running, i.e. neither gone nor a zombie waiting for whoever adopted it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("python", ["/nonexistent/python3", "/bin/false"])
def test_a_receiver_that_cannot_start_is_a_config_error(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch, python: str
) -> None:
    monkeypatch.setattr(sys, "executable", python)
    with pytest.raises(ConfigError, match="receiver"):
        TlsRptCollector(sock_path, ListSink()).start()
    assert not sock_path.exists()


# -- the stream between receiver and daemon -------------------------------------------------

RECORDS = st.lists(
    st.tuples(
        st.floats(0, 4e9, allow_nan=False),
        st.binary(max_size=300),
        st.integers(0, 2**32 - 2),
    )
)


@given(records=RECORDS, cuts=st.lists(st.integers(0, 20_000), max_size=8))
def test_stream_decodes_the_same_however_the_pipe_splits_it(
    records: list[tuple[float, bytes, int]], cuts: list[int]
) -> None:
    stream = encode_notice("hello normal") + b"".join(
        encode_datagram(at, data, max(size, len(data))) for at, data, size in records
    )
    buf = bytearray()
    got: list[tuple[float, bytes, int]] = []
    notices: list[str] = []
    for start, stop in itertools.pairwise([0, *sorted(cuts), len(stream)]):
        buf += stream[start:stop]
        more, texts = decode(buf)
        got += more
        notices += texts
    assert got == [(at, data, max(size, len(data))) for at, data, size in records]
    assert notices == ["hello normal"]
    assert buf == b""


def test_a_partial_record_waits_for_the_rest() -> None:
    record = encode_datagram(1.5, b"abc", 3)
    buf = bytearray(record[:-1])
    assert decode(buf) == ([], [])
    assert buf == record[:-1]
    buf += record[-1:]
    assert decode(buf) == ([(1.5, b"abc", 3)], [])


def test_socket_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "run" / "mta-sts-policyd" / "tlsrpt.sock"
    collector = TlsRptCollector(path, ListSink())
    collector.start()
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
    finally:
        collector.stop()
