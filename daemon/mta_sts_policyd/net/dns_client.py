"""The DNS half of discovery: `_mta-sts` TXT, MX and policy-host addresses (RFC 8461 §3.1, §4).

All DNS goes to the same servers, configured from /etc/resolv.conf (parsed by dnspython's
Resolver) or from explicit `nameservers`, so the policy host is resolved by the same servers as
the TXT record. Questions travel through dns_transport.py; dnspython exceptions end there or
here: NXDOMAIN and NODATA are answers ("nothing published"); SERVFAIL, REFUSED and timeouts are
DnsLookupError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.inet
import dns.name
import dns.rdatatype
import dns.resolver

from mta_sts_policyd.endpoints import parse_nameserver
from mta_sts_policyd.errors import ConfigError, DnsLookupError
from mta_sts_policyd.net.dns_reply import Chain, Reply
from mta_sts_policyd.net.dns_transport import DnsTransport, Nameserver
from mta_sts_policyd.sts import TxtAbsent, TxtResult, select_sts_record

try:  # dnspython >= 2.4; Debian 12 ships 2.3, which keeps explicit servers as address strings
    from dns.nameserver import Do53Nameserver
except ImportError:  # pragma: no cover - exercised by the Debian package test
    Do53Nameserver = None  # type: ignore[assignment,misc]

_EDNS_PAYLOAD = 1232
"""The DNS-flag-day UDP payload size: larger answers are retried over TCP."""


@dataclass(frozen=True)
class StsTxtLookup:
    """The outcome of the `_mta-sts` TXT query.

    `ttl` is the smallest TTL along the answer (CNAMEs included) or the negative-caching TTL;
    `records` are all TXT RRs with their strings joined, kept only to explain decisions.
    """

    result: TxtResult
    ttl: int
    records: tuple[str, ...]


@dataclass(frozen=True)
class MxLookup:
    """MX host names by preference (() when there are none) and the answer's smallest TTL."""

    hosts: tuple[str, ...]
    ttl: int


@dataclass(frozen=True, slots=True)
class RecordSet:
    """Any one question's answer, for `check`: the CNAME chain, the data as text, the AD bit.

    `texts` are the records in presentation form (MX: `PREFERENCE HOST` with the host without
    its final dot, `.` for a null MX; A/AAAA: the address); `strings` are the TXT
    character-strings of each record (empty for other types).
    """

    name: str
    chain: tuple[tuple[str, str], ...]
    """CNAME steps followed inside the answer: (alias, target), in order."""
    texts: tuple[str, ...]
    strings: tuple[tuple[bytes, ...], ...]
    ttl: int
    nxdomain: bool
    authenticated: bool


def make_resolver(nameservers: Sequence[str], timeout: float) -> dns.asyncresolver.Resolver:
    """The servers and timeouts to use: `nameservers`, or the system configuration when empty.

    Only a configuration holder (dnspython parses resolv.conf): questions go through
    transport_for(...), never through the Resolver itself."""
    try:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    except dns.resolver.NoResolverConfiguration as exc:
        raise ConfigError(f"no usable system DNS configuration: {exc}") from None
    if nameservers:
        parsed = [parse_nameserver(spec) for spec in nameservers]
        if Do53Nameserver is not None:
            resolver.nameservers = [Do53Nameserver(ip, port) for ip, port in parsed]
        else:  # dnspython 2.3: addresses, with their ports in nameserver_ports
            resolver.nameservers = [ip for ip, _ in parsed]
            resolver.nameserver_ports = dict(parsed)
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    return resolver


@dataclass(frozen=True, slots=True)
class _Answer:
    """One question's outcome: the records at the end of the CNAME chain (() for NODATA and
    NXDOMAIN), rdata objects of the asked type."""

    records: tuple[Any, ...]
    ttl: int
    """Smallest TTL along the chain, or the negative-caching TTL (SOA minimum) without data."""
    nxdomain: bool
    authenticated: bool
    """The resolver set AD: it validated the answer with DNSSEC."""


def transport_for(resolver: dns.asyncresolver.Resolver) -> DnsTransport:
    """The transport asking the resolver's configured servers with its timeouts.

    Servers read from resolv.conf arrive as address strings (on the resolver's port), explicit
    ones as Do53Nameserver objects; DoH/DoT entries are not used.
    """
    ports: dict[str, int] = getattr(resolver, "nameserver_ports", None) or {}
    servers = [
        Nameserver(ns, ports.get(ns, resolver.port))
        if isinstance(ns, str)
        else Nameserver(ns.address, ns.port)
        for ns in resolver.nameservers
        if (Do53Nameserver is not None and isinstance(ns, Do53Nameserver))
        or (isinstance(ns, str) and dns.inet.is_address(ns))
    ]
    if not servers:
        raise ConfigError("no plain DNS (port 53 style) nameserver configured")
    return DnsTransport(
        servers,
        lifetime=resolver.lifetime,
        attempt_timeout=resolver.timeout,
        payload=_EDNS_PAYLOAD,
        # RFC 6840 §5.7: AD in the query asks a validating resolver to say whether the answer
        # was DNSSEC-validated (DANE precedence, RFC 8461 §2); harmless for other queries.
        flags=dns.flags.RD | dns.flags.AD,
    )


MAX_NAME_TEXT = 253
"""The longest name in text form (without the final dot) that fits DNS's 255 octets."""
LONG_NAME_TTL = 86400
"""How long "no policy" holds for a domain whose `_mta-sts` name cannot exist: for good."""


class DnsClient:
    """The queries discovery needs, over DnsTransport; dnspython errors never leave it."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._transport = transport_for(resolver)

    async def txt(self, domain: str) -> StsTxtLookup:
        qname = f"_mta-sts.{domain}"
        if len(qname.rstrip(".")) > MAX_NAME_TEXT:  # no record can exist there: no policy
            reason = f"{qname} is longer than a DNS name can be (255 octets, RFC 1035 §2.3.4)"
            return StsTxtLookup(TxtAbsent(reason), LONG_NAME_TTL, ())
        answer = await self._query(qname, dns.rdatatype.TXT)
        if answer.nxdomain:
            return StsTxtLookup(TxtAbsent(f"{qname} does not exist (NXDOMAIN)"), answer.ttl, ())
        if not answer.records:
            return StsTxtLookup(TxtAbsent(f"{qname} has no TXT record"), answer.ttl, ())
        rrs = [tuple(rd.strings) for rd in answer.records]
        joined = tuple(b"".join(strings).decode("ascii", "backslashreplace") for strings in rrs)
        return StsTxtLookup(select_sts_record(rrs), answer.ttl, joined)

    async def txt_strings(self, name: str) -> list[list[bytes]]:
        """Every TXT RR of `name` as its character-strings; [] for NXDOMAIN and NODATA."""
        answer = await self._query(name, dns.rdatatype.TXT)
        return [list(rd.strings) for rd in answer.records]

    async def mx(self, domain: str) -> tuple[str, ...]:
        """MX host names by preference; () for NXDOMAIN, NODATA and a null MX (RFC 7505)."""
        return (await self.mx_lookup(domain)).hosts

    async def mx_lookup(self, domain: str) -> MxLookup:
        """MX host names by preference with the answer's TTL (how long they may be relied on)."""
        return _mx_lookup(await self._query(domain, dns.rdatatype.MX))

    async def records(self, name: str, rtype: str) -> RecordSet:
        """The answer to `name`/`rtype` with its CNAME chain; DnsLookupError when there is none."""
        rdtype = dns.rdatatype.RdataType.make(rtype)
        reply = await self._transport.ask(name, rdtype)
        chain = _chain(name, rdtype, reply)
        return RecordSet(
            name=name,
            chain=tuple((_text(alias), _text(target)) for alias, target in chain.cnames),
            texts=tuple(_presentation(rd) for rd in chain.records),
            strings=tuple(tuple(rd.strings) for rd in chain.records if rdtype == dns.rdatatype.TXT),
            ttl=chain.ttl,
            nxdomain=reply.nxdomain,
            authenticated=reply.authenticated,
        )

    async def tlsa_authenticated(self, host: str, port: int = 25) -> bool:
        """True when `_PORT._tcp.HOST` has TLSA records the resolver validated (AD bit)."""
        answer = await self._query(f"_{port}._tcp.{host}", dns.rdatatype.TLSA)
        return bool(answer.records) and answer.authenticated

    async def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of `host` (A and AAAA asked together); [] when it has none.

        Both families, as Postfix tries both: an MX whose IPv4 is broken is still reached over
        IPv6 (the probe tries these in order when a connection fails). One family failing is
        "no addresses" for it while the other has some; when both fail, the A failure is raised.
        """
        v4, v6 = await asyncio.gather(
            self._addresses(host, dns.rdatatype.A),
            self._addresses(host, dns.rdatatype.AAAA),
            return_exceptions=True,
        )
        for result in (v4, v6):
            if isinstance(result, BaseException) and not isinstance(result, DnsLookupError):
                raise result  # a bug or a cancellation is not "no addresses"
        if isinstance(v4, DnsLookupError) and isinstance(v6, DnsLookupError):
            raise v4
        return [a for found in (v4, v6) if isinstance(found, list) for a in found]

    async def ipv4(self, host: str) -> list[str]:
        """A records of `host` ([] for NXDOMAIN and NODATA); DnsLookupError on failure."""
        return await self._addresses(host, dns.rdatatype.A)

    async def ipv6(self, host: str) -> list[str]:
        """AAAA records of `host` ([] for NXDOMAIN and NODATA); DnsLookupError on failure."""
        return await self._addresses(host, dns.rdatatype.AAAA)

    async def _addresses(self, host: str, rdtype: dns.rdatatype.RdataType) -> list[str]:
        answer = await self._query(host, rdtype)
        return [rd.address for rd in answer.records]

    def mx_later(self, domain: str) -> Later:
        """The MX question of `domain` asked now; its reply is parsed only if it is read."""
        return Later(self, domain, dns.rdatatype.MX)

    async def _query(self, qname: str, rdtype: dns.rdatatype.RdataType) -> _Answer:
        """Ask; follow the CNAME chain inside the reply. Failures become DnsLookupError."""
        return self._answer(qname, rdtype, await self._transport.ask(qname, rdtype))

    def _answer(self, qname: str, rdtype: dns.rdatatype.RdataType, reply: Reply) -> _Answer:
        chain = _chain(qname, rdtype, reply)
        return _Answer(chain.records, chain.ttl, reply.nxdomain, reply.authenticated)


class Later:
    """A question asked on speculation (the MX set a policy may need): the reply is received
    now but parsed only when read. Parsing a reply costs more CPU than asking (dnspython builds
    every name and record), and most of these are never read. A reply that turns out unusable
    is asked again the ordinary way."""

    def __init__(self, client: DnsClient, qname: str, rdtype: dns.rdatatype.RdataType) -> None:
        self._client = client
        self._qname = qname
        self._rdtype = rdtype
        self._reply = asyncio.ensure_future(client._transport.ask_unparsed(qname, rdtype))

    def cancel(self) -> None:
        """Not needed after all: stop waiting (the reply, if it comes, is never read)."""
        self._reply.cancel()

    async def _read(self) -> _Answer:
        transport = self._client._transport
        reply = transport.parse(await self._reply)
        if reply is None:
            reply = await transport.ask(self._qname, self._rdtype)
        return self._client._answer(self._qname, self._rdtype, reply)

    async def addresses(self) -> list[str]:
        """A/AAAA: the addresses ([] for NXDOMAIN and NODATA); DnsLookupError on failure."""
        answer = await self._read()
        return [rd.address for rd in answer.records]

    async def mx(self) -> MxLookup:
        """MX: as `DnsClient.mx_lookup`."""
        return _mx_lookup(await self._read())


def _chain(qname: str, rdtype: dns.rdatatype.RdataType, reply: Reply) -> Chain:
    """The reply's CNAME chain followed; a chain dnspython would refuse is a DnsLookupError."""
    try:
        return reply.resolve()
    except dns.exception.DNSException as exc:
        raise DnsLookupError(f"{qname} {rdtype.name}: {exc}") from None


def _mx_lookup(answer: _Answer) -> MxLookup:
    ordered = sorted(answer.records, key=lambda rd: rd.preference)
    hosts = (rd.exchange.to_text(omit_final_dot=True).lower() for rd in ordered)
    return MxLookup(tuple(h for h in hosts if h not in ("", ".")), answer.ttl)


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() or "."


def _presentation(rd: Any) -> str:
    if rd.rdtype == dns.rdatatype.MX:
        return f"{rd.preference} {_text(rd.exchange)}"
    return str(rd.to_text())
