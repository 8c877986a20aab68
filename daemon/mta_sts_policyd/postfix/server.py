"""Asyncio socketmap server: Postfix smtp(8) processes ask, `answer` replies (RFC 8461 §3.4;
docs/conformance.md: PF-socketmap-sequential, PF-socketmap-framing-error).

One `asyncio.Protocol` per connection (cheaper per request than streams). Requests on one
connection are answered strictly in order. The answer coroutine is first driven inline: a
cached answer that never suspends costs no Task and no extra loop iteration; only an answer
that really waits (a first fetch) continues in a Task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.net.systemd import systemd_listen_sockets
from mta_sts_policyd.net.unix_socket import BoundUnixSocket, bind_unix_socket
from mta_sts_policyd.postfix.connection import Connection, ConnectionLimits, FastReplyFn
from mta_sts_policyd.postfix.socketmap import MAX_REQUEST

__all__ = [
    "AnswerFn",
    "ConnectionLimits",
    "EventFn",
    "SocketmapServer",
    "systemd_listen_sockets",
]

AnswerFn = Callable[[str, str], Awaitable[bytes]]
"""(map name, key) -> unframed reply payload."""
EventFn = Callable[[str], None]

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL = 10.0
"""At most one `connection-refused` log line per this many seconds (a flood must not flood the
log); the line says how many were refused since the previous one."""


class SocketmapServer:
    """Listeners plus the set of live connections; `close` drains in-flight answers.

    Events passed to `on_event`: connection_open, connection_close, connection_rejected
    (over `max_connections`, or while closing), malformed (framing error, connection closed
    without a reply, docs/conformance.md: PF-socketmap-framing-error), idle_timeout, request_timeout
    (a request not whole within `request_timeout` of its first byte), answer_error (answered
    NOTFOUND, docs/conformance.md: PF-socketmap-no-temp), reply_too_large.
    """

    def __init__(
        self,
        answer: AnswerFn,
        *,
        max_connections: int = 1000,
        idle_timeout: float = 60.0,
        request_timeout: float = 10.0,
        max_request: int = MAX_REQUEST,
        on_event: EventFn | None = None,
        fast_reply: FastReplyFn | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.answer = answer
        self.fast_reply = fast_reply
        self.max_connections = max_connections
        self.limits = limits or ConnectionLimits(
            max_request=max_request,
            idle_timeout=idle_timeout,
            request_timeout=min(request_timeout, idle_timeout),
        )
        self.rejected_connections = 0
        """Connections refused since start (exported as a metric)."""
        self._refusals_logged = 0
        self._refusal_logged_at = float("-inf")
        self._on_event = on_event
        self._servers: list[asyncio.AbstractServer] = []
        self._unix_files: list[BoundUnixSocket] = []
        self._connections: set[Connection] = set()
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
        server = await loop.create_server(Connection.factory(self), host, port)
        self._servers.append(server)
        address = server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def listen_unix(
        self, path: str, mode: int = 0o660, group: str | int | None = None
    ) -> None:
        """Listen on a UNIX socket; mode and group are set before listen(), so no window."""
        bound = bind_unix_socket(
            path, socket.SOCK_STREAM, mode=mode, group=group, what="socketmap socket"
        )
        try:
            loop = asyncio.get_running_loop()
            server = await loop.create_unix_server(Connection.factory(self), sock=bound.sock)
        except BaseException:
            bound.close()
            raise
        self._servers.append(server)
        self._unix_files.append(bound)

    async def adopt_sockets(self, socks: list[socket.socket]) -> None:
        """Serve inherited sockets: listening ones (Accept=no) and connected ones (Accept=yes)."""
        loop = asyncio.get_running_loop()
        factory = Connection.factory(self)
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
        for bound in self._unix_files:
            bound.remove_file()
        self._unix_files.clear()

    def admit(self, conn: Connection) -> bool:
        """A new connection: into the live set, or refused (logged, rate-limited; counted)."""
        if self._closing or len(self._connections) >= self.max_connections:
            self.rejected_connections += 1
            self.emit("connection_rejected")
            self._log_refusal()
            return False
        self._connections.add(conn)
        self.emit("connection_open")
        return True

    def release(self, conn: Connection) -> None:
        self._connections.discard(conn)
        self.emit("connection_close")
        if self._drained is not None and not self._connections:
            self._drained.set()

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - self._refusal_logged_at < REFUSAL_LOG_INTERVAL:
            return
        log.warning(
            "event=connection-refused reason=%s max_connections=%d refused=%d total=%d",
            "stopping" if self._closing else "max-connections",
            self.max_connections,
            self.rejected_connections - self._refusals_logged,
            self.rejected_connections,
        )
        self._refusal_logged_at = now
        self._refusals_logged = self.rejected_connections
