"""One HTTP/1.1 GET on a fresh connection: h11 between the request and the network stream.

Why not httpcore's pool for the policy fetch: a fetch never reuses a connection, and the pool's
request bookkeeping, its locks (anyio's, each acquire a trip through the event loop) and its
cancellation shields cost CPU and event-loop turns on every cold lookup. With 20 cold lookups
in flight, every turn waits for the other lookups' ready work, so each one lengthens the tail.
h11 still does all of HTTP/1.1's framing (status line, fields, Content-Length, chunked and
close-delimited bodies); the caller judges status, fields and size (RFC 8461 §3.3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import h11

from mta_sts_policyd.net.https_stream import AsyncNetworkStream

READ_SIZE = 64 * 1024
MAX_HEAD = 100 * 1024
"""Largest status line + header block accepted (httpcore's limit, which the fetch had before)."""

Fields = list[tuple[bytes, bytes]]


class OneGet:
    """A GET of `target` over `stream`: `head()` then `body()`; h11.ProtocolError on bad HTTP."""

    def __init__(self, stream: AsyncNetworkStream) -> None:
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)

    async def send(self, target: str, headers: Sequence[tuple[bytes, bytes]]) -> None:
        request = h11.Request(method=b"GET", target=target.encode("ascii"), headers=list(headers))
        data = (self._h11.send(request) or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        await self._stream.write(data)

    async def head(self) -> tuple[int, Fields]:
        """Status and header fields of the final response (1xx responses are skipped)."""
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                return event.status_code, [(name, value) for name, value in event.headers]
            if not isinstance(event, h11.InformationalResponse):
                raise h11.RemoteProtocolError(f"{type(event).__name__} before a response")

    async def body(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive, until the response ends."""
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise h11.RemoteProtocolError(f"{type(event).__name__} in a body")

    async def _next(self) -> h11.Event:
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                self._h11.receive_data(await self._stream.read(READ_SIZE))  # b"": end of stream
            elif isinstance(event, h11.Event) and not isinstance(event, h11.ConnectionClosed):
                return event
            else:  # closed, or PAUSED (only after a complete response, which ends the reading)
                raise h11.RemoteProtocolError("the connection ended before the response did")
