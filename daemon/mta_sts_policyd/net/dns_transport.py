"""One DNS question to the configured recursive resolvers: UDP, TCP when truncated, no Resolver.

Why not dnspython's async Resolver: its resolution bookkeeping and its asyncio backend (a
datagram endpoint, a protocol and futures per query) cost about twice the CPU of building and
parsing the messages themselves, and every cold lookup, background TXT re-check and refresh
asks two or three questions. dnspython still builds the query and parses and validates the
reply; this module only moves bytes, on a fresh socket per query so the kernel picks a random
source port (with dnspython's random ID, the spoofing defence of RFC 5452).

Semantics kept from the Resolver: servers are tried in order; a server that answers SERVFAIL,
REFUSED or anything but NOERROR/NXDOMAIN, or whose exchange fails in any other way (unreachable,
TCP closed without an answer, a reply dnspython cannot use), is not asked again for this
question; `ask` is the one place where such errors become DnsLookupError; a silent server
is retried in the next round until `lifetime` is spent; a reply with TC set is asked again over
TCP; replies with the wrong ID or question are ignored.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from mta_sts_policyd.errors import DnsLookupError

_MAX_UDP = 65535
_TC = 0x02  # in the third header byte


@dataclass(frozen=True, slots=True)
class Nameserver:
    address: str
    port: int = 53

    def __str__(self) -> str:
        return f"Do53:{self.address}@{self.port}"  # how dnspython names a server


class DnsTransport:
    """Asks `nameservers` one question at a time; every failure is a DnsLookupError."""

    def __init__(
        self,
        nameservers: Sequence[Nameserver],
        *,
        lifetime: float,
        attempt_timeout: float,
        payload: int,
        flags: int,
    ) -> None:
        if not nameservers:
            raise ValueError("no nameservers")
        self.nameservers = tuple(nameservers)
        self.lifetime = lifetime
        self.attempt_timeout = attempt_timeout
        self.payload = payload
        self.flags = flags

    async def ask(self, qname: str, rdtype: dns.rdatatype.RdataType) -> dns.message.QueryMessage:
        """The reply (rcode NOERROR or NXDOMAIN) of the first server that gives one."""
        try:
            query = dns.message.make_query(
                qname, rdtype, use_edns=0, payload=self.payload, flags=self.flags
            )
        except (dns.exception.DNSException, ValueError) as exc:
            raise DnsLookupError(f"{qname} {rdtype.name}: {exc}") from None
        wire = query.to_wire()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lifetime
        candidates = list(self.nameservers)
        errors: list[str] = []
        while candidates:
            for server in list(candidates):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise self._timeout(qname, rdtype)
                try:
                    reply = await self._exchange(
                        query, wire, server, min(self.attempt_timeout, remaining)
                    )
                except TimeoutError:
                    continue  # silent: ask it again next round
                except Exception as exc:  # the one place DNS I/O errors end
                    errors.append(f"{server} failed ({_describe(exc)})")
                    candidates.remove(server)
                    continue
                rcode = reply.rcode()
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return reply
                errors.append(f"{server} answered {dns.rcode.to_text(rcode)}")
                candidates.remove(server)
        raise DnsLookupError(f"{qname} {rdtype.name}: {'; '.join(errors)}")

    def _timeout(self, qname: str, rdtype: dns.rdatatype.RdataType) -> DnsLookupError:
        return DnsLookupError(f"{qname} {rdtype.name}: no DNS answer within {self.lifetime:g} s")

    async def _exchange(
        self, query: dns.message.Message, wire: bytes, server: Nameserver, budget: float
    ) -> dns.message.QueryMessage:
        async with asyncio.timeout(budget):
            reply = await self._udp(query, wire, server)
            if reply is None:  # truncated
                reply = await self._tcp(query, server, budget)
        if not isinstance(reply, dns.message.QueryMessage):
            raise OSError("reply is not a query response")
        return reply

    async def _udp(
        self, query: dns.message.Message, wire: bytes, server: Nameserver
    ) -> dns.message.Message | None:
        """The UDP reply, or None when it was truncated (ask over TCP)."""
        family = socket.AF_INET6 if ":" in server.address else socket.AF_INET
        loop = asyncio.get_running_loop()
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((server.address, server.port))  # replies from elsewhere never arrive
            sock.send(wire)
            while True:
                data = await loop.sock_recv(sock, _MAX_UDP)
                if data[:2] != wire[:2]:
                    continue  # not our ID: a stray or forged datagram
                if len(data) > 2 and data[2] & _TC:
                    return None
                try:
                    reply = dns.message.from_wire(data, ignore_trailing=True)
                except dns.exception.DNSException:
                    continue  # malformed: keep waiting for a good one until the timeout
                if query.is_response(reply):
                    return reply

    async def _tcp(
        self, query: dns.message.Message, server: Nameserver, budget: float
    ) -> dns.message.Message:
        """The TCP retry after truncation. Any failure but a timeout (dnspython raises EOFError
        when the server closes without answering, DNSException, OSError, ...) ends this server's
        turn in `ask`, which goes on with the next one."""
        try:
            return await dns.asyncquery.tcp(query, server.address, budget, server.port)
        except dns.exception.Timeout:
            raise TimeoutError from None
        except Exception as exc:  # translated in ask
            raise _TcpFailed(exc) from exc


class _TcpFailed(Exception):
    """The TCP retry failed; says so in the reason."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"TCP retry after truncation: {_describe(cause)}")


def _describe(exc: BaseException) -> str:
    """A reason naming what failed even when the library's message is empty (EOFError())."""
    if isinstance(exc, _TcpFailed):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"unreachable: {exc.strerror}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
