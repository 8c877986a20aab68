"""Client TLS on a memory BIO over an asyncio TCP stream, the handshake's costly step in a thread.

Why: the client's processing of the server's handshake flight (key exchange, certificate chain
and name checks, key schedule) is about a third of a cold lookup's CPU. In asyncio's or uvloop's
SSL transport it runs on the event loop thread, so in a burst of cold lookups each one waits
for every other one's handshakes. `SSLObject.do_handshake` releases the GIL, so here that step
runs in a small thread pool, beside the loop and on another core. The first step (the
ClientHello, a fraction of the cost) stays on the loop: a thread hop would cost about as much;
on a single usable core every step does (a thread could only take turns with the loop).
After the handshake, records are encrypted and decrypted inline (a request and a policy are
small), and the client's last handshake flight leaves with the first request. The context
(trust store, minimum version, host name check) is the caller's, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
from concurrent.futures import ThreadPoolExecutor

READ_SIZE = 65536
"""Bytes asked of the TCP stream at once (a TLS record is at most ~16 KiB)."""


@functools.cache
def handshake_pool() -> ThreadPoolExecutor | None:
    """The process's handshake threads, created on first use: one fewer than its usable cores
    (the loop thread needs one), at most four. None on a single core, where a thread could only
    take turns with the loop and the step runs inline."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = min(4, (cores or 1) - 1)
    return ThreadPoolExecutor(threads, thread_name_prefix="tls-handshake") if threads else None


class TlsSession:
    """One client TLS connection on `reader`/`writer` (a plain TCP stream pair).

    The SSL object is only ever touched by one thread at a time: a handshake step in the pool
    is awaited before the BIOs are read or written again, and a handshake that was cancelled or
    failed leaves the session unusable (`close` then sends nothing: the step may still run).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        server_hostname: str | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._established = False

    async def handshake(self) -> None:
        """ssl.SSLError on a refused handshake (SSLCertVerificationError for the certificate),
        ConnectionResetError when the peer closes during it; our alert is sent either way."""
        loop = asyncio.get_running_loop()
        pool = handshake_pool()
        first = True
        while True:
            try:
                if first or pool is None:
                    first = False
                    self.ssl_object.do_handshake()
                else:
                    await loop.run_in_executor(pool, self.ssl_object.do_handshake)
            except ssl.SSLWantReadError:
                self._flush()
            except ssl.SSLError:
                self._flush()  # the alert that says why
                raise
            else:
                # Our last flight (TLS 1.3: the Finished) waits for a write in this same turn of
                # the loop, so it leaves with the request in one TCP segment, not two; without
                # one it goes at the turn's end.
                self._established = True
                loop.call_soon(self._flush_if_open)
                return
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("connection closed during the TLS handshake")
            self._incoming.write(data)

    async def read(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` of plaintext; b"" at the end (close_notify or the peer's FIN)."""
        while True:
            try:
                data = self.ssl_object.read(max_bytes)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                return b""
            else:
                self._flush()  # what reading may answer (a TLS 1.3 key update)
                return data
            self._flush()
            raw = await self._reader.read(READ_SIZE)
            if not raw:  # no close_notify: the end all the same, as asyncio's SSL transport says
                return b""
            self._incoming.write(raw)

    async def write(self, data: bytes) -> None:
        self.ssl_object.write(data)
        self._flush()
        await self._writer.drain()

    def close_notify(self) -> None:
        """Queue our close_notify (the caller closes the TCP stream; the peer's is not awaited)."""
        if not self._established:
            return
        self._established = False
        # SSLWantReadError: the peer's close_notify has not come (it is not needed)
        with contextlib.suppress(ssl.SSLError):
            self.ssl_object.unwrap()
        self._flush()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._writer.write(self._outgoing.read())

    def _flush_if_open(self) -> None:
        if not self._writer.is_closing():
            self._flush()
