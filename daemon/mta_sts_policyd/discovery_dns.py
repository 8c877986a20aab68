"""The DNS half of discovery: `_mta-sts` TXT, MX and policy-host addresses (RFC 8461 §3.1, §4).

All DNS goes through one dnspython async resolver, configured from /etc/resolv.conf or from
explicit `nameservers`, so the policy host is resolved by the same servers as the TXT record.
dnspython exceptions are translated to DnsLookupError here and nowhere else: NXDOMAIN and NODATA
are answers ("nothing published"); SERVFAIL, REFUSED and timeouts are not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import idna

from mta_sts_policyd.errors import ConfigError, DnsLookupError
from mta_sts_policyd.sts import TxtAbsent, TxtResult, select_sts_record

_EDNS_PAYLOAD = 1232
"""The DNS-flag-day UDP payload size: larger answers are retried over TCP."""


@dataclass(frozen=True)
class TxtLookup:
    """The outcome of the `_mta-sts` TXT query.

    `ttl` is the smallest TTL along the answer (CNAMEs included) or the negative-caching TTL;
    `records` are all TXT RRs with their strings joined, kept only to explain decisions.
    """

    result: TxtResult
    ttl: int
    records: tuple[str, ...]


def parse_nameserver(spec: str) -> tuple[str, int]:
    """Parse "IP", "IP:PORT", "IPv6", "[IPv6]" or "[IPv6]:PORT" -> (address, port)."""
    host, port = spec.strip(), "53"
    if host.startswith("["):
        host, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"nameserver {spec!r}: expected [IPv6]:PORT")
        port = rest[1:] or port
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        address = str(ipaddress.ip_address(host))
        number = int(port)
    except ValueError:
        raise ConfigError(f"nameserver {spec!r}: expected IP, IP:PORT or [IPv6]:PORT") from None
    if not 0 < number < 65536:
        raise ConfigError(f"nameserver {spec!r}: port out of range")
    return address, number


def make_resolver(nameservers: Sequence[str], timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver using `nameservers` (or the system configuration when empty)."""
    try:
        resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    except dns.resolver.NoResolverConfiguration as exc:
        raise ConfigError(f"no usable system DNS configuration: {exc}") from None
    if nameservers:
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(*parse_nameserver(spec)) for spec in nameservers
        ]
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    resolver.use_edns(0, 0, _EDNS_PAYLOAD)
    resolver.search = []
    # RFC 6840 §5.7: AD in the query asks a validating resolver to say whether the answer was
    # DNSSEC-validated (used for DANE precedence, RFC 8461 §2); harmless for other queries.
    resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


def ascii_domain(domain: str) -> str:
    """Lower-case A-label form without a trailing dot (U-labels: IDNA 2008 with UTS 46 mapping).

    The `idna` package is used directly (httpx depends on it); dnspython's IDNA 2008 support
    switches itself off when the installed idna is older than it wants.
    """
    name = domain.strip().rstrip(".")
    if not name.isascii():
        name = idna.encode(name, uts46=True).decode("ascii")
    return name.lower()


class DnsClient:
    """The three queries discovery needs, with dnspython errors translated."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._resolver = resolver

    async def txt(self, domain: str) -> TxtLookup:
        qname = f"_mta-sts.{domain}"
        try:
            answer = await self._query(qname, "TXT")
        except dns.resolver.NXDOMAIN as exc:
            return TxtLookup(TxtAbsent(f"{qname} does not exist (NXDOMAIN)"), _nx_ttl(exc), ())
        ttl = int(answer.chaining_result.minimum_ttl)
        if answer.rrset is None:
            return TxtLookup(TxtAbsent(f"{qname} has no TXT record"), ttl, ())
        rrs = [tuple(rd.strings) for rd in answer.rrset]
        joined = tuple(b"".join(strings).decode("ascii", "backslashreplace") for strings in rrs)
        return TxtLookup(select_sts_record(rrs), ttl, joined)

    async def mx(self, domain: str) -> tuple[str, ...]:
        """MX host names by preference; () for NXDOMAIN, NODATA and a null MX (RFC 7505)."""
        try:
            answer = await self._query(domain, "MX")
        except dns.resolver.NXDOMAIN:
            return ()
        if answer.rrset is None:
            return ()
        ordered = sorted(answer.rrset, key=lambda rd: rd.preference)
        hosts = (rd.exchange.to_text(omit_final_dot=True).lower() for rd in ordered)
        return tuple(h for h in hosts if h not in ("", "."))

    async def tlsa_authenticated(self, host: str, port: int = 25) -> bool:
        """True when `_PORT._tcp.HOST` has TLSA records the resolver validated (AD bit)."""
        try:
            answer = await self._query(f"_{port}._tcp.{host}", "TLSA")
        except dns.resolver.NXDOMAIN:
            return False
        return answer.rrset is not None and bool(answer.response.flags & dns.flags.AD)

    async def addresses(self, host: str) -> list[str]:
        """IPv4 addresses of `host`, else its IPv6 addresses; [] when it has none.

        AAAA is asked only when there is no A record: one query instead of two for the usual
        policy host or MX, at the price of a second round trip for IPv6-only hosts. A failed A
        query still lets AAAA answer; when both fail, the A failure is raised.
        """
        try:
            found = await self._addresses(host, "A")
        except DnsLookupError as v4_error:
            try:
                v6 = await self._addresses(host, "AAAA")
            except DnsLookupError:
                raise v4_error from None
            if not v6:
                raise
            return v6
        return found or await self._addresses(host, "AAAA")

    async def _addresses(self, host: str, rdtype: str) -> list[str]:
        try:
            answer = await self._query(host, rdtype)
        except dns.resolver.NXDOMAIN:
            return []
        return [rd.address for rd in answer.rrset] if answer.rrset is not None else []

    async def _query(self, qname: str, rdtype: str) -> dns.resolver.Answer:
        """Resolve; NXDOMAIN passes through, every other failure becomes DnsLookupError."""
        try:
            return await self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            raise
        except dns.exception.Timeout:
            timeout = self._resolver.lifetime
            raise DnsLookupError(f"{qname} {rdtype}: no DNS answer within {timeout:g} s") from None
        except dns.resolver.NoNameservers as exc:
            raise DnsLookupError(f"{qname} {rdtype}: {_server_errors(exc)}") from None
        except (dns.exception.DNSException, ValueError) as exc:
            raise DnsLookupError(f"{qname} {rdtype}: {exc}") from None


def _server_errors(exc: dns.resolver.NoNameservers) -> str:
    """Say "Do53:127.0.0.1@53 answered SERVFAIL" for each server tried."""
    parts = [f"{error[0]} answered {error[3]}" for error in exc.kwargs.get("errors") or []]
    return "; ".join(parts) or "no nameserver gave a usable answer"


def _nx_ttl(exc: dns.resolver.NXDOMAIN) -> int:
    """The negative-caching TTL of an NXDOMAIN answer (SOA minimum), 0 when unknown."""
    responses: dict[dns.name.Name, dns.message.QueryMessage] = exc.kwargs.get("responses") or {}
    for response in responses.values():
        try:
            return int(response.resolve_chaining().minimum_ttl)
        except dns.exception.DNSException:
            continue
    return 0
