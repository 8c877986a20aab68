"""Socketmap server on real loopback/UNIX sockets (RFC 8461 §3.4; docs/conformance.md:
PF-socketmap-sequential, PF-socketmap-framing-error, PF-socketmap-request, PF-socketmap-no-temp)."""

from __future__ import annotations

import asyncio
import grp
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from mta_sts_policyd.errors import ConfigError, SocketInUseError
from mta_sts_policyd.postfix.server import SocketmapServer, systemd_listen_sockets
from mta_sts_policyd.postfix.socketmap import encode_netstring
from support.socketmap_fakes import SECURE, Answers, read_replies

POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
async def events() -> list[str]:
    return []


@pytest.fixture
async def server(answers: Answers, events: list[str]) -> AsyncIterator[SocketmapServer]:
    srv = SocketmapServer(answers, idle_timeout=5.0, on_event=events.append)
    yield srv
    await srv.close(drain_deadline=0.5)


async def connect(addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*addr)


async def request(addr: tuple[str, int], key: str, name: str = "postfix") -> bytes:
    reader, writer = await connect(addr)
    writer.write(encode_netstring(f"{name} {key}".encode()))
    (reply,) = await read_replies(reader, 1)
    writer.close()
    return reply


async def assert_closed_without_reply(reader: asyncio.StreamReader) -> None:
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def wait_until(cond: Callable[[], bool]) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_single_request(server: SocketmapServer) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    assert await request(addr, "example.com") == SECURE
    assert await request(addr, "other.example") == b"NOTFOUND "


async def test_other_map_name_is_answered_by_key(server: SocketmapServer, answers: Answers) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    assert await request(addr, "example.com", name="othermap") == SECURE
    assert answers.calls == [("othermap", "example.com")]


async def test_pipelined_requests_in_one_write(server: SocketmapServer) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    keys = ["example.com", "slow1.example", "x.example", "slow2.example", "example.com"]
    writer.write(b"".join(encode_netstring(b"postfix " + k.encode()) for k in keys))
    replies = await read_replies(reader, 5)
    assert replies == [SECURE, b"OK slow1.example", b"NOTFOUND ", b"OK slow2.example", SECURE]
    writer.close()


async def test_requests_split_byte_by_byte(server: SocketmapServer) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    wire = encode_netstring(b"postfix example.com") + encode_netstring(b"postfix slow.example")
    for i in range(len(wire)):
        writer.write(wire[i : i + 1])
        await writer.drain()
        await asyncio.sleep(0.001)
    assert await read_replies(reader, 2) == [SECURE, b"OK slow.example"]
    writer.close()


async def test_many_concurrent_connections_answer_in_order(server: SocketmapServer) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)

    async def client(i: int) -> list[bytes]:
        reader, writer = await connect(addr)
        keys = [f"slow{i}-{j}.example" if j % 3 == 0 else "example.com" for j in range(9)]
        writer.write(b"".join(encode_netstring(b"postfix " + k.encode()) for k in keys))
        got = await read_replies(reader, 9)
        writer.close()
        want = [b"OK " + k.encode() if k.startswith("slow") else SECURE for k in keys]
        assert got == want
        return got

    results = await asyncio.gather(*(client(i) for i in range(60)))
    assert len(results) == 60
    assert server.connection_count <= 60


@pytest.mark.parametrize(
    "garbage",
    [b"abc:postfix example.com,", b"19:postfix example.com;", b"01:x,", b"10001:"],
)
async def test_malformed_framing_closes_only_that_connection(
    server: SocketmapServer, events: list[str], garbage: bytes
) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    good_reader, good_writer = await connect(addr)
    bad_reader, bad_writer = await connect(addr)
    bad_writer.write(garbage)
    await assert_closed_without_reply(bad_reader)
    assert "malformed" in events
    good_writer.write(encode_netstring(b"postfix example.com"))
    assert await read_replies(good_reader, 1) == [SECURE]
    good_writer.close()


async def test_replies_before_the_garbage_are_still_delivered(server: SocketmapServer) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    writer.write(encode_netstring(b"postfix example.com"))
    assert await read_replies(reader, 1) == [SECURE]
    writer.write(b"x:")
    await assert_closed_without_reply(reader)


async def test_request_size_limit(server: SocketmapServer) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    at_limit = b"postfix " + b"a" * (10_000 - 8)
    reader, writer = await connect(addr)
    writer.write(encode_netstring(at_limit))
    assert await read_replies(reader, 1) == [b"NOTFOUND "]
    writer.write(encode_netstring(at_limit + b"a"))
    await assert_closed_without_reply(reader)


async def test_idle_timeout_closes_quiet_connections_only(
    answers: Answers, events: list[str]
) -> None:
    srv = SocketmapServer(answers, idle_timeout=0.3, on_event=events.append)
    addr = await srv.listen_tcp("127.0.0.1", 0)
    quiet_reader, _quiet = await connect(addr)
    busy_reader, busy_writer = await connect(addr)
    for _ in range(6):  # 0.6 s of traffic, a request every 0.1 s
        busy_writer.write(encode_netstring(b"postfix example.com"))
        assert await read_replies(busy_reader, 1) == [SECURE]
        await asyncio.sleep(0.1)
    await assert_closed_without_reply(quiet_reader)
    assert events.count("idle_timeout") == 1
    assert srv.connection_count == 1
    await srv.close(drain_deadline=0.5)


async def test_a_slow_answer_is_not_idle(answers: Answers) -> None:
    srv = SocketmapServer(answers, idle_timeout=0.1)
    addr = await srv.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    writer.write(encode_netstring(b"postfix gated.example"))
    await asyncio.sleep(0.3)
    answers.gate.set()
    assert await read_replies(reader, 1) == [b"OK gated"]
    await srv.close(drain_deadline=0.5)


async def test_connection_cap_rejects_new_connections(answers: Answers, events: list[str]) -> None:
    srv = SocketmapServer(answers, max_connections=2, on_event=events.append)
    addr = await srv.listen_tcp("127.0.0.1", 0)
    first = await connect(addr)
    second = await connect(addr)
    await wait_until(lambda: srv.connection_count == 2)
    third_reader, _third_writer = await connect(addr)
    await assert_closed_without_reply(third_reader)
    assert srv.rejected_connections == 1
    assert events.count("connection_rejected") == 1
    for reader, writer in (first, second):
        writer.write(encode_netstring(b"postfix example.com"))
        assert await read_replies(reader, 1) == [SECURE]
    first[1].close()
    await wait_until(lambda: srv.connection_count == 1)
    assert await request(addr, "example.com") == SECURE
    await srv.close(drain_deadline=0.5)


async def test_answer_exception_becomes_notfound(
    server: SocketmapServer, events: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    for key in (b"boom.example", b"lateboom.example", b"example.com"):
        writer.write(encode_netstring(b"postfix " + key))
    assert await read_replies(reader, 3) == [b"NOTFOUND ", b"NOTFOUND ", SECURE]
    assert events.count("answer_error") == 2
    assert "RuntimeError: bug" in caplog.text
    assert "RuntimeError: late bug" in caplog.text
    writer.close()


async def test_oversized_answer_becomes_notfound(
    server: SocketmapServer, events: list[str]
) -> None:
    addr = await server.listen_tcp("127.0.0.1", 0)
    assert await request(addr, "huge.example") == b"NOTFOUND "
    assert "reply_too_large" in events


@pytest.mark.fault
async def test_empty_answer_is_never_sent_as_an_empty_payload(
    server: SocketmapServer, events: list[str]
) -> None:
    """Issue 11 item 2: `0:,` makes Postfix report "socketmap server unknown error" and defer."""
    addr = await server.listen_tcp("127.0.0.1", 0)
    assert await request(addr, "empty.example") == b"NOTFOUND "
    assert "answer_error" in events


async def test_client_that_does_not_read_is_paused_not_buffered(server: SocketmapServer) -> None:
    """Flow control: replies to a pipelining client that stops reading stay bounded."""
    addr = await server.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    keys = [f"big{i}.example".encode() for i in range(300)]  # ~18 MB of replies
    writer.write(b"".join(encode_netstring(b"postfix " + k) for k in keys))
    await asyncio.sleep(0.2)
    (conn,) = server._connections
    assert conn._write_paused
    replies = await read_replies(reader, 300)
    assert [r.split(b" ")[1] for r in replies] == keys
    writer.close()


async def test_cancelled_answer_is_cleaned_up_and_answered_notfound(
    events: list[str],
) -> None:
    cleaned: list[str] = []

    async def answer(name: str, key: str) -> bytes:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(key)
        return b"OK never"

    srv = SocketmapServer(answer, on_event=events.append)
    addr = await srv.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    writer.write(encode_netstring(b"postfix stuck.example"))
    await wait_until(lambda: any(_is_answer_task(t) for t in asyncio.all_tasks()))
    (task,) = [t for t in asyncio.all_tasks() if _is_answer_task(t)]
    task.cancel()
    assert await read_replies(reader, 1) == [b"NOTFOUND "]
    assert cleaned == ["stuck.example"]
    assert "answer_error" in events
    writer.close()
    await srv.close()


def _is_answer_task(task: asyncio.Task[object]) -> bool:
    return task.get_coro().__qualname__ == "finish"  # type: ignore[union-attr]


async def test_awaitable_that_is_not_a_coroutine(events: list[str]) -> None:
    def answer(name: str, key: str) -> Awaitable[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        future.set_result(SECURE)
        return future

    srv = SocketmapServer(answer)
    addr = await srv.listen_tcp("127.0.0.1", 0)
    assert await request(addr, "example.com") == SECURE
    await srv.close()


async def test_close_lets_in_flight_answers_finish(answers: Answers) -> None:
    srv = SocketmapServer(answers)
    addr = await srv.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    writer.write(encode_netstring(b"postfix gated.example"))
    await wait_until(lambda: ("postfix", "gated.example") in answers.calls)
    closing = asyncio.create_task(srv.close(drain_deadline=5))
    await asyncio.sleep(0.05)
    assert not closing.done()
    with pytest.raises(OSError):
        await connect(addr)
    answers.gate.set()
    assert await read_replies(reader, 1) == [b"OK gated"]
    await asyncio.wait_for(closing, 2)
    await assert_closed_without_reply(reader)
    assert srv.connection_count == 0


async def test_close_cuts_answers_past_the_deadline(answers: Answers) -> None:
    srv = SocketmapServer(answers)
    addr = await srv.listen_tcp("127.0.0.1", 0)
    reader, writer = await connect(addr)
    writer.write(encode_netstring(b"postfix gated.example"))
    await wait_until(lambda: bool(answers.calls))
    await asyncio.wait_for(srv.close(drain_deadline=0.1), 2)
    with pytest.raises(ConnectionError):
        if await reader.read() == b"":
            raise ConnectionResetError("closed")
    answers.gate.set()


async def test_unix_socket_mode_group_and_cleanup(server: SocketmapServer, tmp_path: Path) -> None:
    path = str(tmp_path / "policyd.sock")
    group = grp.getgrgid(os.getgid()).gr_name
    await server.listen_unix(path, mode=0o640, group=group)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == os.getgid()
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(encode_netstring(b"postfix example.com"))
    assert await read_replies(reader, 1) == [SECURE]
    writer.close()
    await server.close()
    assert not Path(path).exists()  # noqa: ASYNC240


async def test_unix_socket_stale_file_replaced_live_one_refused(
    answers: Answers, tmp_path: Path
) -> None:
    path = str(tmp_path / "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays behind, nobody listens
    first = SocketmapServer(answers)
    await first.listen_unix(path, mode=0o600)
    second = SocketmapServer(answers)
    with pytest.raises(SocketInUseError, match="in use by another process"):
        await second.listen_unix(path)
    with pytest.raises(ConfigError, match="does not exist"):
        await second.listen_unix(str(tmp_path / "t.sock"), group="no-such-group-xyz")
    await first.close()


async def test_adopt_listening_and_connected_sockets(server: SocketmapServer) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    addr = listener.getsockname()
    ours, theirs = socket.socketpair()
    await server.adopt_sockets([listener, ours])
    assert await request(addr, "example.com") == SECURE
    reader, writer = await asyncio.open_connection(sock=theirs)
    writer.write(encode_netstring(b"postfix example.com"))
    assert await read_replies(reader, 1) == [SECURE]
    writer.close()


async def test_adopt_rejects_datagram_sockets(server: SocketmapServer) -> None:
    dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with dgram, pytest.raises(ConfigError, match="not a stream socket"):
        await server.adopt_sockets([dgram])


def test_systemd_listen_sockets_ignores_other_pids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd_listen_sockets() == []
    assert "LISTEN_PID" not in os.environ
    assert "LISTEN_FDS" not in os.environ
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert systemd_listen_sockets() == []


CHILD = """
import os, socket, sys
from mta_sts_policyd.postfix.server import systemd_listen_sockets
fd = socket.create_server(("127.0.0.1", 0)).detach()
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="socketmap")
socks = systemd_listen_sockets()
print(len(socks), socks[0].fileno(), socks[0].family.name, socks[0].type.name,
      os.get_inheritable(3), "LISTEN_FDS" in os.environ, "LISTEN_FDNAMES" in os.environ)
"""


def test_systemd_listen_sockets_in_a_child_process() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.split() == ["1", "3", "AF_INET", "SOCK_STREAM", "False", "False", "False"]


# --- the real client: Postfix's postmap -------------------------------------------------


@pytest.fixture(scope="module")
def postfix_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    conf = tmp_path_factory.mktemp("postfix")
    main_cf = conf / "main.cf"
    main_cf.write_text(
        "myhostname = localhost.localdomain\nmydomain = localdomain\ncompatibility_level = 3.6\n"
    )
    # Postfix waits until a just-written main.cf is a second or more old; backdate it.
    old = main_cf.stat().st_mtime - 60
    os.utime(main_cf, (old, old))
    return conf


async def postmap(
    config: Path, table: str, key: str, stdin: bytes | None = None
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        POSTMAP,
        "-c",
        str(config),
        "-q",
        key,
        table,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


@pytest.mark.skipif(not os.path.exists(POSTMAP), reason="postmap (Postfix) not installed")
async def test_real_postmap_over_tcp_and_unix(
    server: SocketmapServer, postfix_config: Path, tmp_path: Path
) -> None:
    host, port = await server.listen_tcp("127.0.0.1", 0)
    path = tmp_path / "sm.sock"
    await server.listen_unix(str(path))
    for table in (f"socketmap:inet:{host}:{port}:postfix", f"socketmap:unix:{path}:postfix"):
        assert await postmap(postfix_config, table, "example.com") == (
            0,
            "secure match=mail.example.com servername=hostname\n",
        )
        assert await postmap(postfix_config, table, "nothing.example") == (1, "")
        assert await postmap(postfix_config, table, "slow.example") == (0, "slow.example\n")


@pytest.mark.skipif(not os.path.exists(POSTMAP), reason="postmap (Postfix) not installed")
async def test_real_postmap_many_keys_on_one_connection(
    server: SocketmapServer, postfix_config: Path, events: list[str]
) -> None:
    host, port = await server.listen_tcp("127.0.0.1", 0)
    keys = b"example.com\nnothing.example\nslow.example\nexample.com\n"
    code, out = await postmap(postfix_config, f"socketmap:inet:{host}:{port}:postfix", "-", keys)
    assert code == 0
    assert out.splitlines() == [
        "example.com\tsecure match=mail.example.com servername=hostname",
        "slow.example\tslow.example",
        "example.com\tsecure match=mail.example.com servername=hostname",
    ]
    assert events.count("connection_open") == 1


def test_runs_on_uvloop(tmp_path: Path) -> None:
    """uvloop (the `speedups` extra) hands out transports that are not asyncio.Transport."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[bytes]:
        srv = SocketmapServer(Answers())
        addr = await srv.listen_tcp("127.0.0.1", 0)
        await srv.listen_unix(str(tmp_path / "uv.sock"))
        reader, writer = await connect(addr)
        keys = [b"example.com", b"slow.example", b"boom.example"]
        writer.write(b"".join(encode_netstring(b"postfix " + k) for k in keys))
        replies = await read_replies(reader, 3)
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "uv.sock"))
        writer.write(encode_netstring(b"postfix example.com"))
        replies += await read_replies(reader, 1)
        await srv.close(drain_deadline=0.5)
        return replies

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        replies = runner.run(scenario())
    assert replies == [SECURE, b"OK slow.example", b"NOTFOUND ", SECURE]
