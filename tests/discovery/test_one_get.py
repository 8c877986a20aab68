"""One GET read by h11 (discovery/one_get.py): the framing cases a policy host can send.

The stream is a scripted byte source: these tests are about HTTP/1.1 framing, which h11 does
from bytes alone; the fetch over real TLS servers is tested in test_discovery_https.py.
"""

from __future__ import annotations

import h11
import pytest

from mta_sts_policyd.discovery.one_get import OneGet
from mta_sts_policyd.net.https_stream import AsyncNetworkStream

HEADERS = [(b"Host", b"mta-sts.example.test"), (b"Connection", b"close")]


class ScriptedStream(AsyncNetworkStream):
    """Gives `chunks` one per read, then end of stream; keeps what was written."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.written = b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return self.chunks.pop(0)[:max_bytes] if self.chunks else b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.written += buffer

    async def aclose(self) -> None:
        pass


async def exchange(*chunks: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes, bytes]:
    stream = ScriptedStream(*chunks)
    get = OneGet(stream)
    await get.send("/.well-known/mta-sts.txt", HEADERS)
    status, fields = await get.head()
    body = b"".join([chunk async for chunk in get.body()])
    return status, fields, body, stream.written


async def test_request_is_one_get_with_the_given_fields() -> None:
    _, _, _, written = await exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert written == (
        b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n"
        b"Host: mta-sts.example.test\r\nConnection: close\r\n\r\n"
    )


@pytest.mark.parametrize("split", [1, 7, 30, 1000])
async def test_length_framed_response_in_any_pieces(split: int) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    pieces = [raw[i : i + split] for i in range(0, len(raw), split)]
    status, fields, body, _ = await exchange(*pieces)
    assert (status, body) == (200, b"hello")
    assert (b"content-type", b"text/plain") in fields


async def test_chunked_and_close_delimited_bodies() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert (await exchange(chunked))[2] == b"abcde"
    assert (await exchange(b"HTTP/1.1 200 OK\r\n\r\nuntil", b" close"))[2] == b"until close"


async def test_informational_responses_are_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert (await exchange(raw))[0] == 404


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # closed at once
        b"HTTP/1.1 200 OK\r\nContent-Le",  # closed inside the header block
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed inside the body
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",  # ambiguous
    ],
)
async def test_broken_responses_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(h11.ProtocolError):
        await exchange(raw)


async def test_a_header_block_larger_than_the_limit_is_refused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    with pytest.raises(h11.ProtocolError):
        await exchange(raw)
