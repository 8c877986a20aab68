"""One socketmap connection: netstring in, answers in order, netstring out (RFC 8461 §3.4;
docs/conformance.md: PF-socketmap-sequential, PF-socketmap-framing-error).

The answer coroutine is first driven inline (inline.py): a cached answer that never suspends
costs no Task and no extra loop iteration; only an answer that really waits continues in a Task.

One bad client cannot hurt the others: a request must arrive whole within `request_timeout` of
its first byte (a slow-drip client cannot hold its slot by sending a byte now and then); at most
`max_queued` requests wait behind an answer (then the connection stops reading: pipelining
cannot grow memory); and at most `burst` requests are answered per loop turn before the other
connections get theirs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import CoroutineType
from typing import Protocol, cast

from mta_sts_policyd.errors import NetstringError
from mta_sts_policyd.postfix.inline import finish
from mta_sts_policyd.postfix.socketmap import (
    MAX_REPLY,
    MAX_REQUEST,
    REPLY_NOTFOUND,
    NetstringDecoder,
    encode_netstring,
    parse_request,
)

log = logging.getLogger("mta_sts_policyd.postfix.server")


FastReplyFn = Callable[[bytes], "bytes | None"]
"""Raw request (one whole netstring) -> framed reply, or None for the full path (ReplyMemo)."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client may do."""

    max_request: int = MAX_REQUEST
    idle_timeout: float = 60.0
    """Close a connection without a request for this long (a busy one is never idle)."""
    request_timeout: float = 10.0
    """A request must be complete this long after its first byte (per request, not per byte)."""
    max_queued: int = 64
    """Requests waiting behind an answer before the connection stops reading."""
    burst: int = 16
    """Requests answered in one loop turn before yielding to other connections."""


class ConnectionHost(Protocol):
    """What a connection needs from its server (server.SocketmapServer), all public."""

    limits: ConnectionLimits
    fast_reply: FastReplyFn | None

    def answer(self, name: str, key: str) -> Awaitable[bytes]: ...

    def emit(self, event: str) -> None: ...

    def admit(self, conn: Connection) -> bool: ...  # False: refused, the connection is aborted

    def release(self, conn: Connection) -> None: ...  # the connection is gone


class Connection(asyncio.Protocol):
    """One client connection: decode, answer in order, write, watch the deadlines."""

    __slots__ = (
        "_busy",
        "_closing",
        "_deadline",
        "_decoder",
        "_fast_reply",
        "_host",
        "_limits",
        "_loop",
        "_partial",
        "_pending",
        "_read_paused",
        "_resume",
        "_timer",
        "_transport",
        "_write_paused",
    )

    def __init__(self, host: ConnectionHost) -> None:
        self._host = host
        self._limits = host.limits
        self._loop = asyncio.get_running_loop()
        self._decoder = NetstringDecoder(self._limits.max_request)
        self._fast_reply = host.fast_reply
        self._pending: deque[bytes] = deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._resume: asyncio.Handle | None = None
        self._busy = False
        self._closing = False
        self._write_paused = False
        self._read_paused = False
        self._deadline = 0.0
        """Idle: when the connection is closed for idleness; partial: when the request started
        must be complete."""
        self._partial = False
        """The decoder holds the start of a request: the next bytes are not a whole one."""

    @classmethod
    def factory(cls, host: ConnectionHost) -> Callable[[], Connection]:
        return lambda: cls(host)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an asyncio.Transport subclass (uvloop's is not).
        stream = cast(asyncio.Transport, transport)
        if not self._host.admit(self):
            stream.abort()
            return
        self._transport = stream
        self._deadline = self._loop.time() + self._limits.idle_timeout
        self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._transport = None
        self._pending.clear()
        for handle in (self._timer, self._resume):
            if handle is not None:
                handle.cancel()
        self._host.release(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
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
                self._deadline = self._loop.time() + self._limits.idle_timeout
                return
        try:
            requests = self._decoder.feed(data)
        except NetstringError as exc:
            log.warning("event=socketmap-malformed reason=%r peer=%s", str(exc), self._peer())
            self._host.emit("malformed")
            self.close()
            return
        self._track_deadline(bool(requests), self._decoder.buffered > 0)
        if requests:
            self._pending.extend(requests)
            self._flow()
            if not self._busy and self._resume is None:
                self._run()

    def _track_deadline(self, completed: bool, partial: bool) -> None:
        """Idle time counts from the last whole request; a request's time from its first byte."""
        now = self._loop.time()
        if partial and (completed or not self._partial):
            self._deadline = now + self._limits.request_timeout
            timer = self._timer
            if timer is None or timer.when() > self._deadline:  # earlier than the idle check
                if timer is not None:
                    timer.cancel()
                self._timer = self._loop.call_at(self._deadline, self._check_deadline)
        elif not partial and (completed or self._partial):
            self._deadline = now + self._limits.idle_timeout
        self._partial = partial

    def pause_writing(self) -> None:
        """The client is not reading its replies: stop reading its requests too."""
        self._write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._flow()
        if self._transport is not None and not self._busy and self._resume is None:
            self._run()

    def _flow(self) -> None:
        """Read while the client reads its replies and the queue has room; else pause."""
        if self._transport is None or self._closing:
            return
        pause = self._write_paused or len(self._pending) >= self._limits.max_queued
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _run(self) -> None:
        """Answer queued requests in order until one has to wait or the burst is used up."""
        self._resume = None
        pending = self._pending
        budget = self._limits.burst
        while pending and not self._write_paused and self._transport is not None:
            if budget == 0:  # let other connections in; continue in the next loop turn
                self._resume = self._loop.call_soon(self._run)
                break
            budget -= 1
            name, key = parse_request(pending.popleft())
            try:
                answer = self._host.answer(name, key)
                if type(answer) is not CoroutineType and not isinstance(answer, Coroutine):
                    self._wait_for(asyncio.ensure_future(answer), name, key)
                    break
                waiting = answer.send(None)
            except StopIteration as done:
                self._reply(done.value)
                continue
            except Exception:
                self._reply(self._failed(name, key))
                continue
            self._wait_for(self._loop.create_task(finish(answer, waiting)), name, key)
            break
        self._flow()

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
            self._host.emit("reply_too_large")
            reply = REPLY_NOTFOUND
        elif not reply:  # `0:,` is "socketmap server unknown error" to Postfix: it defers
            log.error("event=socketmap-reply-empty replaced=NOTFOUND")
            self._host.emit("answer_error")
            reply = REPLY_NOTFOUND
        self._transport.write(encode_netstring(reply))

    def _failed(self, name: str, key: str, exc: BaseException | None = None) -> bytes:
        """A bug or overload inside `answer`: log it and fail open (TEMP is sticky,
        docs/conformance.md: PF-socketmap-no-temp)."""
        log.error(
            "event=answer-error map=%s key=%r reply=NOTFOUND", name, key, exc_info=exc or True
        )
        self._host.emit("answer_error")
        return REPLY_NOTFOUND

    def _check_deadline(self) -> None:
        """Close a connection idle for idle_timeout, or whose request is not whole in time.
        A connection waiting on an answer, or in the middle of a burst, is neither."""
        if self._transport is None:
            return
        now = self._loop.time()
        if self._busy or self._resume is not None:
            self._deadline = max(self._deadline, now + self._limits.idle_timeout)
        if now < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)
            return
        self._host.emit("request_timeout" if self._partial else "idle_timeout")
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
