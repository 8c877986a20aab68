"""An httpcore network stream on asyncio's own transports (uvloop's C TLS when it runs).

Why: httpcore's default anyio backend does TLS through a Python memory-BIO layer and writes
every TLS flight separately; the native transports halve the CPU of a policy fetch. Errors are
raised as httpcore's types with the original exception chained, so discovery's classification
(certificate problems -> sts-webpki-invalid) sees the same causes as before.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import httpcore

try:  # httpcore >= 0.17; Debian 12 ships 0.16, where the backend interface is not yet public
    from httpcore import AsyncNetworkBackend, AsyncNetworkStream
except ImportError:  # pragma: no cover - exercised by the Debian package test
    from httpcore.backends.base import (  # type: ignore[no-redef,import-not-found]
        AsyncNetworkBackend,
        AsyncNetworkStream,
    )

__all__ = ["AsyncNetworkBackend", "AsyncNetworkStream", "AsyncioStream"]

CLOSE_GRACE = 1.0
"""Longest wait for an orderly (TLS) close before the connection is aborted."""


async def open_stream(
    address: str,
    port: int,
    timeout: float | None,  # noqa: ASYNC109 (httpcore passes per-call timeouts)
) -> AsyncioStream:
    """TCP connection to `address` (an IP literal), as an httpcore stream."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"connect to {address}:{port} timed out") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return AsyncioStream(reader, writer)


class AsyncioStream(AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        try:
            if timeout is None:  # the caller's own deadline applies (the policy fetch)
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("read timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            if timeout is None:  # the caller's own deadline applies (the policy fetch)
                await self._writer.drain()
            else:
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("write timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        """Close without ever waiting long on the peer. A stalled peer ignores our TLS
        close_notify and asyncio would wait up to 30 s for its answer, past any fetch deadline:
        when the caller is being cancelled (the deadline passed) the connection is aborted at
        once, otherwise the orderly close gets `CLOSE_GRACE` seconds."""
        transport = self._writer.transport
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            transport.abort()
            return
        self._writer.close()
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await self._writer.wait_closed()
        except TimeoutError:
            transport.abort()
        except asyncio.CancelledError:
            transport.abort()
            raise
        except (OSError, ssl.SSLError):  # the peer is gone: nothing to report
            pass

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            self._writer.close()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from exc
        except (OSError, ssl.SSLError) as exc:  # SSLCertVerificationError is chained
            self._writer.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            return self._reader.at_eof()
        return None
