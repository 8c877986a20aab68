"""The CPU floor of a cached answer on a Python event loop: a socketmap server that does nothing.

Run by the `loops` scenario beside our daemon, on the same event loop:
`python loop_floor.py PORT KEYS_FILE asyncio|uvloop`. One `asyncio.Protocol` per connection whose
`data_received` looks the whole request up in a dict of ready framed replies and writes it: no
netstring decoding, no limits, no deadlines, no cache bookkeeping. Prints "ready" once
listening. What the C echo server costs per answer is the kernel's floor; what this costs on
top of it is the event loop's, which any server on that loop pays before its own work.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mta_sts_policyd.postfix.socketmap import REPLY_NOTFOUND, encode_netstring

REPLY = b"OK secure match=mx1.example.net:mx2.example.net servername=hostname"
NOTFOUND = encode_netstring(REPLY_NOTFOUND)


class Answer(asyncio.Protocol):
    """Request bytes -> ready reply bytes, one dict lookup per request."""

    def __init__(self, replies: dict[bytes, bytes]) -> None:
        self.replies = replies
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.replies.get(data, NOTFOUND))


async def serve(port: int, replies: dict[bytes, bytes]) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Answer(replies), "127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main(port: int, keys_file: str, loop: str) -> None:
    framed = encode_netstring(REPLY)
    replies = {
        encode_netstring(f"postfix {key}".encode()): framed
        for key in Path(keys_file).read_text().split()
    }
    if loop == "uvloop":
        import uvloop

        uvloop.run(serve(port, replies))
    else:
        asyncio.run(serve(port, replies))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
