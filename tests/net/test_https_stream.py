"""The HTTPS stream under the policy fetch: its TLS handshake's costly step (the server's flight:
key exchange, certificate checks) runs in a worker thread, not on the event loop thread, on
asyncio and on uvloop alike; failures and cancellation behave as on the loop's own SSL transport.

Where each handshake message is handled is seen through the context's message callback
(`SSLContext._msg_callback`, the stdlib's debugging hook: OpenSSL calls it in the thread that
runs the handshake step), against the real loopback HTTPS server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpcore
import pytest

from mta_sts_policyd.net.https_stream import AsyncNetworkStream, open_stream
from mta_sts_policyd.net.tls import client_context
from mta_sts_policyd.net.tls_session import TlsSession, handshake_pool
from support.https_server import HttpsServer

HOST = "mta-sts.example.test"
POLICY = b"version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def _uvloop_run(coro: Coroutine[Any, Any, Any]) -> Any:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.run(coro)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else _uvloop_run


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    pool = handshake_pool()
    if pool is None:
        pytest.skip("one usable core: the handshake step runs on the loop thread")
    return pool


@pytest.fixture
def server(https_server: HttpsServer) -> Iterator[HttpsServer]:
    https_server.set_policy("example.test", POLICY)
    yield https_server


class Seen:
    """The thread that handled each handshake message (direction, message type)."""

    def __init__(self) -> None:
        self.threads: dict[tuple[str, str], set[str]] = {}
        self.hook: Callable[[str, str], None] = lambda direction, message: None

    def __call__(self, _conn: Any, direction: str, _v: Any, _ct: Any, msg: Any, _d: Any) -> None:
        message = getattr(msg, "name", str(msg))
        self.threads.setdefault((direction, message), set()).add(threading.current_thread().name)
        self.hook(direction, message)


def context(server: HttpsServer, seen: Seen) -> ssl.SSLContext:
    ctx = client_context(ca_file=server.ca_pem_path)
    ctx._msg_callback = seen  # type: ignore[attr-defined]
    return ctx


async def get(server: HttpsServer, ctx: ssl.SSLContext, host: str = HOST) -> bytes:
    """One GET of the policy over a fresh connection, as httpcore drives the stream."""
    stream: AsyncNetworkStream = await open_stream("127.0.0.1", server.port, None)
    stream = await stream.start_tls(ctx, server_hostname=host)
    request = f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    await stream.write(request.encode())
    answer = b""
    while chunk := await stream.read(65536):
        answer += chunk
    await stream.aclose()
    return answer


def test_the_servers_flight_is_handled_off_the_loop_thread(
    server: HttpsServer, run: Runner, pool: ThreadPoolExecutor
) -> None:
    seen = Seen()

    async def main() -> tuple[str, list[bytes]]:
        ctx = context(server, seen)
        answers = await asyncio.gather(*(get(server, ctx) for _ in range(8)))
        return threading.current_thread().name, answers

    loop_thread, answers = run(main())
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(POLICY) for a in answers)
    assert seen.threads[("write", "CLIENT_HELLO")] == {loop_thread}  # cheap: no hop
    for message in ("SERVER_HELLO", "CERTIFICATE", "CERTIFICATE_VERIFY", "FINISHED"):
        threads = seen.threads[("read", message)]
        assert loop_thread not in threads, message
        assert all(name.startswith("tls-handshake") for name in threads), threads
    assert [r.sni for r in server.requests] == [HOST] * 8


def test_on_one_core_the_handshake_stays_on_the_loop_thread(
    server: HttpsServer, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mta_sts_policyd.net.tls_session.handshake_pool", lambda: None)
    seen = Seen()

    async def main() -> tuple[str, bytes]:
        return threading.current_thread().name, await get(server, context(server, seen))

    loop_thread, answer = run(main())
    assert answer.endswith(POLICY)
    assert seen.threads[("read", "CERTIFICATE")] == {loop_thread}


def test_the_loop_keeps_running_while_handshakes_complete(
    server: HttpsServer, run: Runner, pool: ThreadPoolExecutor
) -> None:
    """A loop-thread ticker still ticks while a step is in a worker thread: the step that a
    message hook holds up for 0.2 s does not hold up the loop."""
    seen = Seen()
    ticks: list[float] = []

    def slow(direction: str, message: str) -> None:
        if (direction, message) == ("read", "CERTIFICATE"):
            time.sleep(0.2)

    seen.hook = slow

    async def main() -> bytes:
        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticking = asyncio.ensure_future(ticker())
        try:
            return await get(server, context(server, seen))
        finally:
            ticking.cancel()

    start = time.monotonic()
    assert run(main()).endswith(POLICY)
    assert time.monotonic() - start >= 0.2
    assert len(ticks) >= 10
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.15


@pytest.mark.parametrize(("cert", "detail"), [("expired", "expired"), ("wrong-name", "mismatch")])
def test_a_refused_certificate_is_chained_from_the_worker_thread(
    server: HttpsServer, run: Runner, cert: str, detail: str
) -> None:
    """policy_fetch classifies by ssl.SSLCertVerificationError in the cause chain."""
    server.set_policy("example.test", POLICY, cert=cert)

    async def main() -> BaseException:
        with pytest.raises(httpcore.ConnectError) as info:
            await get(server, client_context(ca_file=server.ca_pem_path))
        return info.value

    error = run(main())
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert detail in str(error.__cause__.verify_message)
    assert server.requests == []
    deadline = time.monotonic() + 5
    while not server.tls_failures and time.monotonic() < deadline:
        time.sleep(0.01)
    [failure] = server.tls_failures
    assert "CERTIFICATE" in failure.error.upper()  # our alert reached the server


def test_a_fetch_cancelled_during_the_threaded_step_cleans_up(
    server: HttpsServer, run: Runner, pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller's deadline may pass while a step runs in the pool: the connection is aborted
    at once, the step finishes on its own (bounded CPU work) and nothing is left behind or
    logged; the pool serves the next handshake."""
    seen = Seen()
    step_done = threading.Event()

    async def main() -> tuple[float, bytes]:
        loop = asyncio.get_running_loop()
        task: asyncio.Task[bytes] | None = None

        def cancel_mid_step(direction: str, message: str) -> None:
            if (direction, message) == ("read", "CERTIFICATE") and not step_done.is_set():
                assert task is not None
                loop.call_soon_threadsafe(task.cancel)
                time.sleep(0.3)  # still in the step when the cancel lands
                step_done.set()

        seen.hook = cancel_mid_step
        task = asyncio.ensure_future(get(server, context(server, seen)))
        start = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - start
        await asyncio.to_thread(step_done.wait, 5)
        await asyncio.sleep(0.05)  # the finished step's result reaches the cancelled future
        return took, await get(server, client_context(ca_file=server.ca_pem_path))

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        took, answer = run(main())
    assert took < 0.25  # not held until the step ended
    assert answer.endswith(POLICY)
    assert step_done.is_set()
    deadline = time.monotonic() + 5
    while not server.tls_failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.tls_failures) == 1  # the aborted handshake, seen by the server
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert pool._work_queue.empty()


def test_a_peer_that_closes_during_the_handshake_is_a_connect_error(run: Runner) -> None:
    async def main() -> BaseException:
        async def hang_up(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            stream = await open_stream("127.0.0.1", port, None)
            with pytest.raises(httpcore.ConnectError) as info:
                await stream.start_tls(client_context(), server_hostname=HOST)
            return info.value
        finally:
            listener.close()

    error = run(main())
    assert isinstance(error.__cause__, ConnectionResetError)


def tls_records(chunk: bytes) -> list[int]:
    """The content types of the TLS records in `chunk` (22 handshake, 20 change_cipher_spec,
    23 application data: in TLS 1.3 the Finished too)."""
    types = []
    while chunk:
        types.append(chunk[0])
        chunk = chunk[5 + int.from_bytes(chunk[3:5], "big") :]
    return types


async def recorded_session(server: HttpsServer) -> tuple[TlsSession, list[bytes]]:
    """A session whose TCP writes are recorded, one entry per write."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writes: list[bytes] = []
    send = writer.write

    def record(data: bytes) -> None:  # type: ignore[override]
        writes.append(bytes(data))
        send(data)

    writer.write = record  # type: ignore[method-assign]
    return TlsSession(reader, writer, client_context(ca_file=server.ca_pem_path), HOST), writes


async def read_all(session: TlsSession) -> bytes:
    answer = b""
    while chunk := await session.read(65536):
        answer += chunk
    return answer


REQUEST = f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"


def test_the_last_handshake_flight_leaves_with_the_request(
    server: HttpsServer, run: Runner
) -> None:
    """TLS 1.3: the client's Finished and the GET go out in one TCP write, not two (a segment
    and a system call fewer per policy fetch)."""

    async def main() -> tuple[bytes, list[bytes]]:
        session, writes = await recorded_session(server)
        await session.handshake()
        await session.write(REQUEST.encode())
        return await read_all(session), writes

    answer, writes = run(main())
    assert answer.endswith(POLICY)
    hello, last = writes
    assert tls_records(hello) == [22]
    assert tls_records(last)[-2:] == [23, 23]  # the Finished, then the request


def test_without_a_request_the_finished_still_leaves_in_the_same_turn(
    server: HttpsServer, run: Runner
) -> None:
    async def main() -> tuple[list[bytes], list[bytes], bytes]:
        session, writes = await recorded_session(server)
        await session.handshake()
        right_after = list(writes)
        await asyncio.sleep(0)
        after_a_turn = list(writes)
        await session.write(REQUEST.encode())
        return right_after, after_a_turn, await read_all(session)

    right_after, after_a_turn, answer = run(main())
    assert len(right_after) == 1  # the ClientHello only: the Finished is held for a request
    assert tls_records(after_a_turn[-1])[-1] == 23 and len(after_a_turn) == 2
    assert answer.endswith(POLICY)
