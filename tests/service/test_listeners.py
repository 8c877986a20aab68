"""service/listeners.py: the socketmap listeners `serve` opens, on real loopback and unix
sockets; a bind that fails names its address and the cause alone."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from mta_sts_policyd.config.settings import ServerConfig
from mta_sts_policyd.postfix.server import SocketmapServer
from mta_sts_policyd.service.listeners import open_listeners
from support.ports import free_port


async def _answer(name: str, key: str) -> bytes:
    return b"OK " + key.encode()


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"19:postfix example.com,")
    reply = await reader.readuntil(b",")
    writer.close()
    return reply


async def test_every_listen_address_is_opened_and_the_tcp_ones_are_returned(
    tmp_path: Path,
) -> None:
    port, path = free_port(), tmp_path / "s.sock"
    server = SocketmapServer(_answer)
    try:
        settings = ServerConfig(listen=(f"127.0.0.1:{port}", f"unix:{path}"), unix_mode="0600")
        assert await open_listeners(server, settings) == [("127.0.0.1", port)]
        assert path.is_socket() and path.stat().st_mode & 0o777 == 0o600
        expected = b"14:OK example.com,"
        assert await _ask(*await asyncio.open_connection("127.0.0.1", port)) == expected
        assert await _ask(*await asyncio.open_unix_connection(str(path))) == expected
    finally:
        await server.close(drain_deadline=0.5)


async def test_a_busy_address_is_named_with_the_cause_alone() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = SocketmapServer(_answer)
        try:
            with pytest.raises(OSError) as refused:
                await open_listeners(server, ServerConfig(listen=(f"127.0.0.1:{port}",)))
        finally:
            await server.close(drain_deadline=0.5)
    assert refused.value.strerror == f"cannot listen on 127.0.0.1:{port}: Address already in use"
