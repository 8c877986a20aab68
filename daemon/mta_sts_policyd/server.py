"""Asyncio socketmap server: Postfix smtp(8) processes ask, `answer` replies (spec C.1.6-C.1.8).

One `asyncio.Protocol` per connection (cheaper per request than streams). Requests on one
connection are answered strictly in order. The answer coroutine is first driven inline: a
cached answer that never suspends costs no Task and no extra loop iteration; only an answer
that really waits (a first fetch) continues in a Task.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import stat
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, cast

from mta_sts_policyd.errors import ConfigError, NetstringError
from mta_sts_policyd.postfix import (
    MAX_REPLY,
    MAX_REQUEST,
    REPLY_NOTFOUND,
    NetstringDecoder,
    encode_netstring,
    parse_request,
)
from mta_sts_policyd.sdnotify import systemd_listen_sockets

__all__ = ["AnswerFn", "EventFn", "SocketmapServer", "systemd_listen_sockets"]

AnswerFn = Callable[[str, str], Awaitable[bytes]]
"""(map name, key) -> unframed reply payload."""
EventFn = Callable[[str], None]

log = logging.getLogger(__name__)


class SocketmapServer:
    """Listeners plus the set of live connections; `close` drains in-flight answers.

    Events passed to `on_event`: connection_open, connection_close, connection_rejected
    (over `max_connections`), malformed (framing error, connection closed without a reply,
    D.48), idle_timeout, answer_error (answered NOTFOUND, D.60), reply_too_large.
    """

    def __init__(
        self,
        answer: AnswerFn,
        *,
        max_connections: int = 1000,
        idle_timeout: float = 60.0,
        max_request: int = MAX_REQUEST,
        on_event: EventFn | None = None,
    ) -> None:
        self.answer = answer
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_request = max_request
        self.rejected_connections = 0
        self._on_event = on_event
        self._servers: list[asyncio.AbstractServer] = []
        self._unix_paths: list[tuple[str, int]] = []
        self._connections: set[_Connection] = set()
        self._closing = False
        self._drained: asyncio.Event | None = None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def emit(self, event: str) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        """Listen on host:port (port 0 picks one); return the bound address."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Connection.factory(self), host, port)
        self._servers.append(server)
        address = server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def listen_unix(self, path: str, mode: int = 0o660, group: str | None = None) -> None:
        """Listen on a UNIX socket; mode and group are set before listen(), so no window."""
        gid = _group_id(group) if group else -1
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, mode)
            if gid >= 0:
                os.chown(path, -1, gid)
            loop = asyncio.get_running_loop()
            server = await loop.create_unix_server(_Connection.factory(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._servers.append(server)
        self._unix_paths.append((path, os.stat(path).st_ino))

    async def adopt_sockets(self, socks: list[socket.socket]) -> None:
        """Serve inherited sockets: listening ones (Accept=no) and connected ones (Accept=yes)."""
        loop = asyncio.get_running_loop()
        factory = _Connection.factory(self)
        for sock in socks:
            if sock.type != socket.SOCK_STREAM:
                raise ConfigError(f"inherited fd {sock.fileno()} is not a stream socket")
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                await loop.connect_accepted_socket(factory, sock)
            elif sock.family == socket.AF_UNIX:
                self._servers.append(await loop.create_unix_server(factory, sock=sock))
            else:
                self._servers.append(await loop.create_server(factory, sock=sock))

    async def close(self, drain_deadline: float = 5.0) -> None:
        """Stop accepting; let in-flight answers finish until the deadline; then cut the rest."""
        self._closing = True
        for server in self._servers:
            server.close()
        self._drained = asyncio.Event()
        for conn in list(self._connections):
            conn.shutdown()
        if self._connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_deadline)
        for conn in list(self._connections):
            conn.kill()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for path, inode in self._unix_paths:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
        self._unix_paths.clear()

    def _admit(self, conn: _Connection) -> bool:
        if self._closing or len(self._connections) >= self.max_connections:
            self.rejected_connections += 1
            self.emit("connection_rejected")
            return False
        self._connections.add(conn)
        self.emit("connection_open")
        return True

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        self.emit("connection_close")
        if self._drained is not None and not self._connections:
            self._drained.set()


class _Connection(asyncio.Protocol):
    """One client connection: decode, answer in order, write, watch for idleness."""

    __slots__ = (
        "_busy",
        "_closing",
        "_decoder",
        "_idle_handle",
        "_last",
        "_loop",
        "_pending",
        "_server",
        "_transport",
        "_write_paused",
    )

    def __init__(self, server: SocketmapServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._decoder = NetstringDecoder(server.max_request)
        self._pending: deque[bytes] = deque()
        self._transport: asyncio.Transport | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._busy = False
        self._closing = False
        self._write_paused = False
        self._last = 0.0

    @classmethod
    def factory(cls, server: SocketmapServer) -> Callable[[], _Connection]:
        return lambda: cls(server)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an asyncio.Transport subclass (uvloop's is not).
        stream = cast(asyncio.Transport, transport)
        if not self._server._admit(self):
            stream.abort()
            return
        self._transport = stream
        self._last = self._loop.time()
        self._idle_handle = self._loop.call_at(
            self._last + self._server.idle_timeout, self._check_idle
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._transport = None
        self._pending.clear()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        self._server._forget(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last = self._loop.time()
        try:
            requests = self._decoder.feed(data)
        except NetstringError as exc:
            log.warning("event=socketmap-malformed reason=%r peer=%s", str(exc), self._peer())
            self._server.emit("malformed")
            self.close()
            return
        if requests:
            self._pending.extend(requests)
            if not self._busy:
                self._run()

    def pause_writing(self) -> None:
        """The client is not reading its replies: stop reading its requests too."""
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
            if not self._busy:
                self._run()

    def _run(self) -> None:
        """Answer queued requests in order until one has to wait."""
        pending = self._pending
        while pending and not self._write_paused and self._transport is not None:
            name, key = parse_request(pending.popleft())
            try:
                answer = self._server.answer(name, key)
                if type(answer) is not CoroutineType and not isinstance(answer, Coroutine):
                    self._wait_for(asyncio.ensure_future(answer), name, key)
                    return
                waiting = answer.send(None)
            except StopIteration as done:
                self._reply(done.value)
                continue
            except Exception:
                self._reply(self._failed(name, key))
                continue
            self._wait_for(self._loop.create_task(_finish(answer, waiting)), name, key)
            return

    def _wait_for(self, task: asyncio.Future[bytes], name: str, key: str) -> None:
        self._busy = True
        task.add_done_callback(lambda t: self._answered(t, name, key))

    def _answered(self, task: asyncio.Future[bytes], name: str, key: str) -> None:
        self._busy = False
        exc = asyncio.CancelledError() if task.cancelled() else task.exception()
        self._reply(task.result() if exc is None else self._failed(name, key, exc))
        if self._closing:
            self.close()
        elif not self._write_paused:
            self._run()

    def _reply(self, reply: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return  # closed for bad framing or idleness: no late reply
        if len(reply) > MAX_REPLY:
            log.error("event=socketmap-reply-too-large bytes=%d replaced=NOTFOUND", len(reply))
            self._server.emit("reply_too_large")
            reply = REPLY_NOTFOUND
        self._transport.write(encode_netstring(reply))

    def _failed(self, name: str, key: str, exc: BaseException | None = None) -> bytes:
        """A bug or overload inside `answer`: log it and fail open (TEMP is sticky, D.60)."""
        log.error(
            "event=answer-error map=%s key=%r reply=NOTFOUND", name, key, exc_info=exc or True
        )
        self._server.emit("answer_error")
        return REPLY_NOTFOUND

    def _check_idle(self) -> None:
        """Close a connection without requests for idle_timeout (a busy one is never idle)."""
        if self._transport is None:
            return
        now = self._loop.time()
        deadline = (
            now + self._server.idle_timeout
            if self._busy
            else self._last + self._server.idle_timeout
        )
        if now < deadline:
            self._idle_handle = self._loop.call_at(deadline, self._check_idle)
            return
        self._server.emit("idle_timeout")
        self.close()

    def shutdown(self) -> None:
        """Server closing: finish the answer in flight, start no new one."""
        self._closing = True
        self._pending.clear()
        if not self._busy:
            self.close()

    def close(self) -> None:
        """Close without answering more; replies already written are still flushed."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def kill(self) -> None:
        """Drop the connection now, unflushed replies included (drain deadline passed)."""
        if self._transport is not None:
            self._transport.abort()

    def _peer(self) -> str:
        if self._transport is None:
            return "-"
        return str(self._transport.get_extra_info("peername") or "unix")


async def _finish(coro: Awaitable[bytes], waiting: Any) -> bytes:
    """Continue `coro`, which already ran inline up to a suspension yielding `waiting`."""
    return await _Resumed(coro, waiting)


class _Resumed:
    """Awaitable that hands the pending future to the Task, then keeps driving `coro`."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Awaitable[bytes], waiting: Any) -> None:
        self._coro: Coroutine[Any, Any, bytes] = coro  # type: ignore[assignment]
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, bytes]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go to the coroutine
                try:
                    waiting = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                continue
            try:
                waiting = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


def _group_id(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"unix socket group {group!r} does not exist") from None


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead daemon; refuse to steal a live one's."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # bind() will fail with EADDRINUSE and say so
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise OSError(f"{path}: another process is listening on it")
    finally:
        probe.close()
