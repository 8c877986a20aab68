"""An httpcore network stream on asyncio's own TCP transports, TLS by `tls_session.py`.

Why: httpcore's default anyio backend writes every TLS flight separately through layers that
cost twice the CPU of asyncio's own transports; those (and uvloop's) do the TLS handshake on the
event loop thread, where a burst of cold fetches queues behind it, while `TlsSession` runs its
costly step in a worker thread. Errors are raised as httpcore's types with the original
exception chained, so discovery's classification (certificate problems -> sts-webpki-invalid)
sees the same causes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import httpcore

from mta_sts_policyd.net.tls_session import TlsSession

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
        self._tls: TlsSession | None = None

    async def _read(self, max_bytes: int) -> bytes:
        if self._tls is None:
            return await self._reader.read(max_bytes)
        return await self._tls.read(max_bytes)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        try:
            if timeout is None:  # the caller's own deadline applies (the policy fetch)
                return await self._read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("read timed out") from exc
        except OSError as exc:  # ssl.SSLError included
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        try:
            if timeout is None:  # the caller's own deadline applies (the policy fetch)
                await self._write(buffer)
            else:
                async with asyncio.timeout(timeout):
                    await self._write(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("write timed out") from exc
        except OSError as exc:  # ssl.SSLError included
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def _write(self, buffer: bytes) -> None:
        if self._tls is None:
            self._writer.write(buffer)
            await self._writer.drain()
        else:
            await self._tls.write(buffer)

    async def aclose(self) -> None:
        """Close without ever waiting long on the peer: when the caller is being cancelled (the
        deadline passed) the connection is aborted at once; otherwise our TLS close_notify is
        sent (the peer's is not awaited: a stalled peer never sends it) and the TCP close gets
        `CLOSE_GRACE` seconds to flush."""
        transport = self._writer.transport
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            transport.abort()
            return
        if self._tls is not None:
            self._tls.close_notify()
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
        """The handshake on this stream's TCP connection; it is closed when the handshake fails
        (httpcore would not close it) and aborted when the caller is cancelled."""
        session = TlsSession(self._reader, self._writer, ssl_context, server_hostname)
        try:
            async with asyncio.timeout(timeout):
                await session.handshake()
        except asyncio.CancelledError:
            self._writer.transport.abort()
            raise
        except TimeoutError as exc:
            self._writer.close()
            raise httpcore.ConnectTimeout("TLS handshake timed out") from exc
        except (OSError, ssl.SSLError) as exc:  # SSLCertVerificationError is chained
            self._writer.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        self._tls = session
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._tls.ssl_object if self._tls is not None else None
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":
            return self._reader.at_eof()
        return None
