"""A scripted socketmap answer function and a reply reader, for server and memo tests."""

from __future__ import annotations

import asyncio

from mta_sts_policyd.postfix.socketmap import NetstringDecoder

SECURE = b"OK secure match=mail.example.com servername=hostname"


class Answers:
    """A dict-backed answer function that records calls; some keys wait or fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.gate = asyncio.Event()

    async def __call__(self, name: str, key: str) -> bytes:
        self.calls.append((name, key))
        if key.startswith("slow"):
            await asyncio.sleep(0.05)
            return b"OK " + key.encode()
        if key == "gated.example":
            await self.gate.wait()
            return b"OK gated"
        if key == "boom.example":
            raise RuntimeError("bug")
        if key == "lateboom.example":
            await asyncio.sleep(0)
            raise RuntimeError("late bug")
        if key == "empty.example":
            return b""  # what a policy stored without its rendered reply used to give
        if key == "huge.example":
            return b"OK " + b"x" * 100_000
        if key.startswith("big"):
            return b"OK " + key.encode() + b" " + b"x" * 60_000
        if key == "example.com":
            return SECURE
        return b"NOTFOUND "


async def read_replies(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    decoder = NetstringDecoder(max_length=200_000)
    replies: list[bytes] = []
    while len(replies) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            raise EOFError(f"connection closed after {len(replies)} replies")
        replies += decoder.feed(data)
    return replies
