"""TlsRptCollector on a real unix datagram socket (tlsrpt.md §3.1, §7.1)."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.tlsrpt.collector import Quarantine, TlsRptCollector
from mta_sts_policyd.tlsrpt.datagram import parse_datagram
from mta_sts_policyd.tlsrpt.model import SessionEvent

FIXTURES = Path(__file__).parent / "fixtures" / "datagrams"
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


def test_thousand_nonblocking_datagrams_are_all_submitted_3_1(sock_path: Path) -> None:
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
        sender.sendto(SAMPLES[0], str(sock_path))
    wait_for(lambda: collector.stats.received == 200)
    assert sink.sessions == 0
    threading.Timer(0.2, sink.gate.set).start()
    assert collector.stop(5)
    assert sink.sessions == 200
    assert not sock_path.exists()
    with pytest.raises(OSError):
        sender.sendto(SAMPLES[0], str(sock_path))


def test_backlog_is_bounded_while_the_sink_is_stuck(sock_path: Path, sender: socket.socket) -> None:
    sink = GatedSink()
    collector = started(sock_path, sink, max_backlog=20)
    for _ in range(300):
        sender.sendto(SAMPLES[0], str(sock_path))
    wait_for(lambda: collector.stats.received == 300)
    sink.gate.set()
    assert collector.stop(5)
    stats = collector.stats
    assert stats.backlog_dropped > 0
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


def test_identical_datagrams_keep_their_own_receive_time(
    sock_path: Path, sender: socket.socket
) -> None:
    ticks = iter(range(100, 200))
    sink = ListSink()
    collector = started(sock_path, sink, clock=lambda: float(next(ticks)))
    for expected in (1, 2):
        sender.sendto(SAMPLES[0], str(sock_path))
        wait_for(lambda n=expected: collector.stats.processed == n)  # type: ignore[misc]
    assert collector.stop(5)
    assert [e.timestamp for e in sink.events] == [100.0, 101.0]


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
        with pytest.raises(ConfigError, match="in use"):
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
    sink = GatedSink()  # holds the parse thread so all 50 land in one window
    collector = started(sock_path, sink, clock=lambda: 86_400.0 * 20_000 + 5)
    for _ in range(50):
        sender.sendto(SAMPLES[0], str(sock_path))
    sender.sendto(SAMPLES[2], str(sock_path))
    wait_for(lambda: collector.stats.received == 51)
    sink.gate.set()
    assert collector.stop(5)
    # At most: a first window the parse thread took before blocking, the rest, the other sample.
    assert len(sink.events) <= 3
    assert sink.sessions == 51
    assert collector.stats.events_submitted == 51


def test_identical_datagrams_across_midnight_stay_apart(
    sock_path: Path, sender: socket.socket
) -> None:
    midnight = 86_400.0 * 20_000
    ticks = iter([midnight - 0.001, midnight - 0.0005, midnight, midnight + 0.001])
    sink = GatedSink()
    collector = started(sock_path, sink, clock=lambda: next(ticks))
    for _ in range(4):
        sender.sendto(SAMPLES[0], str(sock_path))
    wait_for(lambda: collector.stats.received == 4)
    sink.gate.set()
    assert collector.stop(5)
    days = {}
    for event in sink.events:
        day = int(event.timestamp // 86_400)
        days[day] = days.get(day, 0) + event.count
    assert days == {19_999: 2, 20_000: 2}
