"""A loopback SMTP server speaking just enough for STARTTLS probes.

Behaviour is configured per server: banner, EHLO with or without STARTTLS, STARTTLS refusal,
plain text instead of a TLS handshake, total silence (for timeouts), a delay before the banner
(for concurrency bounds). The server records what the client did (SNI names, commands, peak
number of simultaneous connections) so tests can assert on the client's behaviour.
Certificates: `trustme_context()` for trustme leaves, `support.certs.CertFactory` for broken ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from types import TracebackType

import trustme


@dataclass
class SmtpBehaviour:
    tls: ssl.SSLContext | None = None
    """Server TLS context; None: STARTTLS is not advertised."""
    advertise_starttls: bool = True
    banner: str = "220 mx.example.test ESMTP test"
    ehlo_reply_code: int = 250
    helo_name: str = "mx.example.test"
    starttls_reply: str = "220 2.0.0 Ready to start TLS"
    plaintext_after_starttls: bool = False
    """Answer STARTTLS with 220 and then send text instead of a TLS ServerHello."""
    after_starttls: str = "tls"
    """After `220` to STARTTLS: "tls" handshake, "silent" (never answer), "close" (hang up)."""
    silent: bool = False
    """Accept the connection and never say anything."""
    banner_delay: float = 0.0


@dataclass
class SmtpRecord:
    """What clients did."""

    connections: int = 0
    active: int = 0
    peak_active: int = 0
    commands: list[str] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    tls_established: int = 0


class LoopbackSmtpServer:
    """`async with LoopbackSmtpServer(behaviour) as srv:` then connect to `srv.host`:`srv.port`
    (127.0.0.1 and an OS-chosen port unless given: MX hosts on 127.0.0.x share one port)."""

    def __init__(self, behaviour: SmtpBehaviour, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behaviour = behaviour
        self.record = SmtpRecord()
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stop = asyncio.Event()
        if behaviour.tls is not None:
            behaviour.tls.sni_callback = self._on_sni

    def _on_sni(self, _obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.record.sni.append(name)

    async def __aenter__(self) -> LoopbackSmtpServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self._stop.set()  # ends "silent" handlers without cancelling them
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5.0)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        rec = self.record
        rec.connections += 1
        rec.active += 1
        rec.peak_active = max(rec.peak_active, rec.active)
        try:
            await self._converse(reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            rec.active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._handlers.discard(task)
            self._writers.discard(writer)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b = self.behaviour
        if b.silent:
            await self._stop.wait()
            return
        await asyncio.sleep(b.banner_delay)
        await _send(writer, b.banner)
        tls_up = False
        while line := await reader.readline():
            command = line.decode("ascii", "replace").strip()
            self.record.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                await _send(writer, *self._ehlo_lines(tls_up))
            elif verb == "STARTTLS" and b.tls is not None and not tls_up:
                await _send(writer, b.starttls_reply)
                if not b.starttls_reply.startswith("220"):
                    continue
                if b.plaintext_after_starttls:
                    await _send(writer, "this is not TLS")
                    return
                if b.after_starttls == "silent":
                    await self._stop.wait()
                if b.after_starttls != "tls":
                    return
                await writer.start_tls(b.tls)
                tls_up = True
                self.record.tls_established += 1
            elif verb == "QUIT":
                await _send(writer, "221 2.0.0 Bye")
                return
            else:
                await _send(writer, "502 5.5.2 Command not recognised")

    def _ehlo_lines(self, tls_up: bool) -> list[str]:
        b = self.behaviour
        if b.ehlo_reply_code != 250:
            return [f"{b.ehlo_reply_code} 5.5.1 go away"]
        keywords = ["PIPELINING", "SIZE 10240000"]
        if b.tls is not None and b.advertise_starttls and not tls_up:
            keywords.append("STARTTLS")
        keywords.append("8BITMIME")
        lines = [f"250-{b.helo_name} hello"]
        lines += [f"250-{k}" for k in keywords[:-1]]
        return [*lines, f"250 {keywords[-1]}"]


async def _send(writer: asyncio.StreamWriter, *lines: str) -> None:
    writer.write(b"".join(line.encode("ascii") + b"\r\n" for line in lines))
    await writer.drain()


def trustme_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    return ctx
