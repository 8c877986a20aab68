"""One DNS question to the configured recursive resolvers: UDP, TCP when truncated, no Resolver.

Why not dnspython's async Resolver: its resolution bookkeeping and its asyncio backend (a
datagram endpoint, a protocol and futures per query) cost about twice the CPU of building and
parsing the messages themselves, and every cold lookup, background TXT re-check and refresh
asks two or three questions. dnspython still encodes the question and reads every name and
record of the reply (dns_reply.py); this module only moves bytes, on a fresh socket per query
so the kernel picks a random source port (with dnspython's random ID, the spoofing defence of
RFC 5452).

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
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.entropy
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.net.dns_reply import Reply, read_reply

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

    async def ask(self, qname: str, rdtype: dns.rdatatype.RdataType) -> Reply:
        """The reply (rcode NOERROR or NXDOMAIN) of the first server that gives one."""
        reply = await self._ask(qname, rdtype, parse=True)
        assert isinstance(reply, Reply)
        return reply

    async def ask_unparsed(self, qname: str, rdtype: dns.rdatatype.RdataType) -> Unparsed:
        """Like `ask`, but the reply is kept as it came: for questions asked on speculation, whose
        answer is often never read (parsing costs more than asking). Only the ID, the TC bit and
        the header's rcode are looked at here; `parse` does the rest when the answer is wanted.
        """
        try:
            query = _Query(qname, rdtype, self.flags, self.payload)
        except (dns.exception.DNSException, ValueError) as exc:
            raise DnsLookupError(f"{qname} {rdtype.name}: {exc}") from None
        reply = await self._ask(qname, rdtype, parse=False, query=query)
        if isinstance(reply, bytes):
            return Unparsed(query, reply, None)
        return Unparsed(query, None, reply)

    @staticmethod
    def parse(unparsed: Unparsed) -> Reply | None:
        """The reply of `ask_unparsed` as `ask` returns it, or None when it is not one `ask`
        would have accepted (malformed, another question, an extended error rcode): the caller
        then asks again with `ask`."""
        if unparsed.reply is not None:
            return unparsed.reply
        assert unparsed.data is not None
        reply = unparsed.query.read(unparsed.data)
        if reply is None:
            return None
        return reply if reply.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) else None

    async def _ask(
        self,
        qname: str,
        rdtype: dns.rdatatype.RdataType,
        *,
        parse: bool,
        query: _Query | None = None,
    ) -> Reply | bytes:
        if query is None:
            try:
                query = _Query(qname, rdtype, self.flags, self.payload)
            except (dns.exception.DNSException, ValueError) as exc:
                raise DnsLookupError(f"{qname} {rdtype.name}: {exc}") from None
        wire = query.wire
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
                        query, wire, server, min(self.attempt_timeout, remaining), parse
                    )
                except TimeoutError:
                    continue  # silent: ask it again next round
                except Exception as exc:  # the one place DNS I/O errors end
                    errors.append(f"{server} failed ({_describe(exc)})")
                    candidates.remove(server)
                    continue
                rcode = _header_rcode(reply) if isinstance(reply, bytes) else reply.rcode
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return reply
                errors.append(f"{server} answered {dns.rcode.to_text(rcode)}")
                candidates.remove(server)
        raise DnsLookupError(f"{qname} {rdtype.name}: {'; '.join(errors)}")

    def _timeout(self, qname: str, rdtype: dns.rdatatype.RdataType) -> DnsLookupError:
        return DnsLookupError(f"{qname} {rdtype.name}: no DNS answer within {self.lifetime:g} s")

    async def _exchange(
        self, query: _Query, wire: bytes, server: Nameserver, budget: float, parse: bool
    ) -> Reply | bytes:
        async with asyncio.timeout(budget):
            reply = await self._udp(query, wire, server, parse)
            if reply is None:  # truncated
                reply = await self._tcp(query, server, budget)
        if reply is None:
            raise OSError("reply is not a query response")
        return reply

    async def _udp(
        self, query: _Query, wire: bytes, server: Nameserver, parse: bool
    ) -> Reply | bytes | None:
        """The UDP reply (unparsed unless `parse`), or None when it was truncated (ask over TCP)."""
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
                if len(data) < 12:
                    continue  # not even a header
                if data[2] & _TC:
                    return None
                if not parse:
                    return data
                reply = query.read(data)
                if reply is not None:  # else malformed or another question: keep waiting
                    return reply

    async def _tcp(self, query: _Query, server: Nameserver, budget: float) -> Reply | None:
        """The TCP retry after truncation, exchanged by dnspython; its message is written out
        and read again (rare, and the one reading of replies stays the only one). Any failure
        but a timeout (dnspython raises EOFError when the server closes without answering,
        DNSException, OSError, ...) ends this server's turn in `ask`, which goes on with the
        next one."""
        try:
            message = dns.message.from_wire(query.wire)
            reply = await dns.asyncquery.tcp(message, server.address, budget, server.port)
            return query.read(reply.to_wire(want_shuffle=False))  # records in the order read
        except dns.exception.Timeout:
            raise TimeoutError from None
        except Exception as exc:  # translated in ask
            raise _TcpFailed(exc) from exc


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A reply of `DnsTransport.ask_unparsed`: the datagram, or the reply when it had to be
    read already (a TCP retry after truncation)."""

    query: _Query
    data: bytes | None
    reply: Reply | None


class _Query:
    """One question as wire bytes, built without a dnspython Message.

    Why: `make_query(...).to_wire()` cost ~100 µs per question, a tenth of a cold lookup's CPU
    with four questions each; the name is still encoded (and checked) by dnspython, only the
    fixed parts are packed here: a header with dnspython's random ID, one question, and an
    EDNS0 OPT record (RFC 6891 §6.1.2: root owner, class = UDP payload size, TTL 0, no data).
    """

    __slots__ = ("ident", "name", "rdtype", "wire")

    def __init__(self, qname: str, rdtype: dns.rdatatype.RdataType, flags: int, payload: int):
        self.name = dns.name.from_text(qname)
        self.rdtype = rdtype
        self.ident = dns.entropy.random_16()
        header = struct.pack("!HHHHHH", self.ident, flags, 1, 0, 0, 1)
        question = bytes(self.name.to_wire() or b"") + struct.pack("!HH", rdtype, dns.rdataclass.IN)
        self.wire = header + question + struct.pack("!BHHIH", 0, dns.rdatatype.OPT, payload, 0, 0)

    def read(self, data: bytes) -> Reply | None:
        """The reply `data` to this question, or None when it is malformed or answers another
        (RFC 5452 §9.1: the reply flag, our ID and opcode, exactly our question)."""
        return read_reply(data, self.ident, self.name, self.rdtype)


def _header_rcode(data: bytes) -> dns.rcode.Rcode:
    """The rcode in the header of an unparsed reply (an extended one is seen when parsed)."""
    return dns.rcode.Rcode.make(data[3] & 0x0F)


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
