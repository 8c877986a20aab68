"""One socketmap connection: netstring in, answers in order, netstring out (C.1.6-C.1.8).

The answer coroutine is first driven inline (`_Resumed`): a cached answer that never suspends
costs no Task and no extra loop iteration; only an answer that really waits continues in a Task.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, Protocol, cast

from mta_sts_policyd.errors import NetstringError
from mta_sts_policyd.postfix.socketmap import (
    MAX_REPLY,
    REPLY_NOTFOUND,
    NetstringDecoder,
    encode_netstring,
    parse_request,
)

log = logging.getLogger("mta_sts_policyd.postfix.server")


FastReplyFn = Callable[[bytes], "bytes | None"]
"""Raw request (one whole netstring) -> framed reply, or None for the full path (ReplyMemo)."""


class ServerSide(Protocol):
    """What a connection needs from its server (server.SocketmapServer)."""

    max_request: int
    idle_timeout: float
    fast_reply: FastReplyFn | None

    def answer(self, name: str, key: str) -> Awaitable[bytes]: ...

    def emit(self, event: str) -> None: ...

    def _admit(self, conn: Connection) -> bool: ...

    def _forget(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection: decode, answer in order, write, watch for idleness."""

    __slots__ = (
        "_busy",
        "_closing",
        "_decoder",
        "_fast_reply",
        "_idle_handle",
        "_last",
        "_loop",
        "_partial",
        "_pending",
        "_server",
        "_transport",
        "_write_paused",
    )

    def __init__(self, server: ServerSide) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._decoder = NetstringDecoder(server.max_request)
        self._fast_reply = server.fast_reply
        self._pending: deque[bytes] = deque()
        self._transport: asyncio.Transport | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._busy = False
        self._closing = False
        self._write_paused = False
        self._last = 0.0
        self._partial = False
        """The decoder holds the start of a request: the next bytes are not a whole one."""

    @classmethod
    def factory(cls, server: ServerSide) -> Callable[[], Connection]:
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
        if (
            self._fast_reply is not None
            and not self._busy
            and not self._pending
            and not self._write_paused
            and not self._partial
        ):
            framed = self._fast_reply(data)
            if framed is not None and self._transport is not None:
                self._transport.write(framed)
                return
        try:
            requests = self._decoder.feed(data)
            self._partial = self._decoder.buffered > 0
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
        elif not reply:  # `0:,` is "socketmap server unknown error" to Postfix: it defers
            log.error("event=socketmap-reply-empty replaced=NOTFOUND")
            self._server.emit("answer_error")
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
