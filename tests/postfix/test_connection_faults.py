"""Issue 11, "Connections": one bad client cannot hurt Postfix (fault suite, docs/faults.md).

Real loopback sockets against SocketmapServer: a pipelining client behind a waiting answer, a
pipelined burst next to other connections, slow-drip clients, and a connection flood; and the
running daemon's refusal metric.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

import pytest

from conftest import StsWorld
from mta_sts_policyd.postfix.server import SocketmapServer
from mta_sts_policyd.postfix.socketmap import NetstringDecoder, encode_netstring
from support.daemon_process import DaemonProcess
from support.ports import free_port
from support.socketmap_fakes import SECURE, Answers, read_replies

pytestmark = pytest.mark.fault

REQUEST = encode_netstring(b"postfix example.com")


async def wait_until(cond: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_requests_pipelined_behind_a_waiting_answer_are_bounded(answers: Answers) -> None:
    """Item 10: 2 MB of requests behind an answer that waits: the server stops reading after
    `max_queued` requests (plus what one read returns) instead of queueing them all."""
    server = SocketmapServer(answers)
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*addr)
    count = 2_000_000 // len(REQUEST)
    writer.write(encode_netstring(b"postfix gated.example") + REQUEST * count)
    await wait_until(lambda: ("postfix", "gated.example") in answers.calls)
    await asyncio.sleep(0.3)  # let the server read whatever it is going to read
    (conn,) = server._connections
    assert conn._read_paused
    assert len(conn._pending) < 12_000  # one 256 KiB read at most past the limit, not 66k
    answers.gate.set()
    replies = await read_replies(reader, count + 1)
    assert replies[0] == b"OK gated" and set(replies[1:]) == {SECURE}
    writer.close()
    await server.close(drain_deadline=0.5)


async def test_a_pipelined_burst_yields_to_other_connections(answers: Answers) -> None:
    """Item 10: thousands of pipelined requests are not answered in one loop turn."""
    turns = Counter[int]()
    turn = 0

    def tick() -> None:
        nonlocal turn
        turn += 1
        ticker[0] = loop.call_soon(tick)

    async def answer(name: str, key: str) -> bytes:
        turns[turn] += 1
        return SECURE

    loop = asyncio.get_running_loop()
    ticker = [loop.call_soon(tick)]
    server = SocketmapServer(answer)
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(REQUEST * 4_000)  # ~92 KB: one read on the server side
    assert len(await read_replies(reader, 4_000)) == 4_000
    ticker[0].cancel()
    assert max(turns.values()) <= 16  # ConnectionLimits.burst; was all 4,000 in one turn
    writer.close()
    await server.close(drain_deadline=0.5)


async def test_slow_drip_client_is_closed_at_the_request_deadline(
    answers: Answers,
) -> None:
    """Item 11: a byte every 0.1 s resets no timer: the request must be whole in time."""
    events: list[str] = []
    server = SocketmapServer(answers, idle_timeout=5.0, request_timeout=0.5, on_event=events.append)
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*addr)
    started = time.monotonic()
    closed_after = None
    for byte in REQUEST:
        writer.write(bytes([byte]))
        await asyncio.sleep(0.1)
        if reader.at_eof() or server.connection_count == 0:
            closed_after = time.monotonic() - started
            break
    assert closed_after is not None and closed_after < 1.5
    assert await asyncio.wait_for(reader.read(), 5) == b""  # no reply
    assert events.count("request_timeout") == 1
    await server.close(drain_deadline=0.5)


async def test_slow_drip_flood_cannot_lock_out_a_real_client(
    answers: Answers, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 11: every slot taken by drippers; they are closed at their request deadline and a
    real client gets in. Refusals meanwhile are counted and logged once (rate-limited)."""
    caplog.set_level(logging.WARNING, "mta_sts_policyd.postfix.server")
    server = SocketmapServer(answers, max_connections=10, idle_timeout=30.0, request_timeout=0.5)
    addr = await server.listen_tcp("127.0.0.1", 0)
    drippers = [await asyncio.open_connection(*addr) for _ in range(10)]
    for _, w in drippers:
        w.write(REQUEST[:3])
    await wait_until(lambda: server.connection_count == 10)
    for _ in range(5):
        r, _w = await asyncio.open_connection(*addr)
        assert await asyncio.wait_for(r.read(), 5) == b""  # refused
    assert server.rejected_connections == 5
    lines = [r for r in caplog.records if "event=connection-refused" in r.getMessage()]
    assert len(lines) == 1 and "max_connections=10" in lines[0].getMessage()
    await wait_until(lambda: server.connection_count == 0, within=3)
    r, w = await asyncio.open_connection(*addr)
    w.write(REQUEST)
    assert await read_replies(r, 1) == [SECURE]
    w.close()
    await server.close(drain_deadline=0.5)


async def test_idle_connection_between_requests_still_gets_idle_timeout(answers: Answers) -> None:
    server = SocketmapServer(answers, idle_timeout=0.4, request_timeout=0.2)
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*addr)
    for _ in range(3):  # whole requests 0.15 s apart: neither deadline passes
        writer.write(REQUEST)
        assert await read_replies(reader, 1) == [SECURE]
        await asyncio.sleep(0.15)
    assert server.connection_count == 1
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then idle: closed
    await server.close(drain_deadline=0.5)


async def test_random_socketmap_bytes_never_hurt_the_server(answers: Answers) -> None:
    """Fuzz: 200 connections send random bytes (valid requests, garbage, bad lengths, huge
    lengths), split at random points. Each gets only whole netstring replies or a close; the
    server never fails an answer, forgets every connection, and still answers a good client."""
    import random

    events: list[str] = []
    server = SocketmapServer(answers, idle_timeout=1.0, request_timeout=0.5, on_event=events.append)
    addr = await server.listen_tcp("127.0.0.1", 0)
    rng = random.Random(11)
    pieces = [REQUEST, b"0:,", b"5:ab", b"99999999:", b"01:a,", b"3:abc;", b":,", b"\x00", b","]

    async def one(seed: int) -> None:
        local = random.Random(seed)
        stream = b"".join(
            local.choice(pieces) if local.random() < 0.7 else local.randbytes(local.randint(1, 40))
            for _ in range(local.randint(1, 12))
        )
        reader, writer = await asyncio.open_connection(*addr)
        cuts = sorted(local.sample(range(len(stream) + 1), min(3, len(stream) + 1)))
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            writer.write(stream[start:end])
            await asyncio.sleep(0)
        decoder = NetstringDecoder(max_length=100_000)
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 5):  # closed in the end
                for reply in decoder.feed(chunk):
                    assert reply.startswith((b"OK ", b"NOTFOUND ")), reply
        except ConnectionResetError:
            pass  # closed with our garbage unread: the kernel resets, replies may be cut
        else:
            assert decoder.buffered == 0  # nothing but whole netstrings
        writer.close()

    await asyncio.gather(*(one(rng.randrange(2**32)) for _ in range(200)))
    assert "answer_error" not in events
    await wait_until(lambda: server.connection_count == 0)
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(REQUEST)
    assert await read_replies(reader, 1) == [SECURE]
    writer.close()
    await server.close(drain_deadline=0.5)


def test_refused_connections_are_a_metric_of_the_running_daemon(world: StsWorld) -> None:
    import socket

    metrics_port = free_port()
    settings = {
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "server": {"max_connections": 1},
    }
    with DaemonProcess.for_servers(world.dns, world.https, settings) as process:
        process.start()
        host, port = process.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as first:
            time.sleep(0.2)
            with socket.create_connection((host, int(port)), timeout=5) as second:
                assert second.recv(1) == b""  # refused: closed at once
            process.wait_for_log(r"event=connection-refused reason=max-connections")
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            first.close()
    assert "mta_sts_policyd_socketmap_connections_refused_total 1.0" in text


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
def world(sts_world: StsWorld) -> StsWorld:
    return sts_world
