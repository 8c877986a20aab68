"""The network half of `check`: ask DNS, the policy host (every address) and the MX hosts
(every address) what they publish, and record it as observations. No judging here.

Reuses the sender's code paths: DnsClient for every question, PolicyFetcher (TLS context,
deadline, 64 KiB cap, no redirects) for the policy, MxProber for STARTTLS. Targets that are not
globally routable are never contacted unless `allow_private` (check is safe to point at names
other people control).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from mta_sts_policyd.discovery.policy_fetch import PolicyFetcher
from mta_sts_policyd.errors import DnsLookupError, PolicyFetchError
from mta_sts_policyd.net.dns_client import DnsClient, RecordSet
from mta_sts_policyd.probe.prober import MxProber
from mta_sts_policyd.sts.txt import select_sts_record
from mta_sts_policyd.tlsrpt.record import RecordSyntaxError, is_candidate, parse_tlsrpt_record
from mta_sts_policyd.tools.check.addresses import address_order
from mta_sts_policyd.tools.check.observations import (
    DomainSeen,
    EndpointProblem,
    MxAddressSeen,
    MxHostSeen,
    MxSeen,
    PolicyAddressSeen,
    PolicyHostSeen,
    TlsRptSeen,
    TxtSeen,
)
from mta_sts_policyd.tools.check.tls_inspect import inspect_tls
from mta_sts_policyd.tools.check.tlsrpt_targets import https_problems, mailto_problem

T = TypeVar("T")


@dataclass(frozen=True)
class Reach:
    """How this run reaches the network."""

    dns: DnsClient
    fetcher: PolicyFetcher
    prober: MxProber
    ca_file: str | None
    https_port: int
    timeout: float
    allow_private: bool


def is_public(address: str) -> bool:
    """Globally routable: not private, loopback, link-local, shared, reserved or multicast."""
    return ipaddress.ip_address(address).is_global


async def observe_domain(domain: str, reach: Reach) -> DomainSeen:
    txt, host, mx, tlsrpt = await asyncio.gather(
        _txt(domain, reach),
        _policy_host(domain, reach),
        _mx(domain, reach),
        _tlsrpt(domain, reach),
    )
    mx_hosts = await asyncio.gather(*(_mx_host(h, reach) for h in dict.fromkeys(mx.hosts)))
    targets = [t for _, t in txt.chain] + [t for _, t in host.chain]
    return DomainSeen(domain, txt, host, mx, tuple(mx_hosts), tlsrpt, tuple(targets))


async def _txt(domain: str, reach: Reach) -> TxtSeen:
    return await observe_txt(domain, reach.dns)


async def observe_txt(domain: str, dns: DnsClient) -> TxtSeen:
    """The `_mta-sts` TXT record set of `domain` (also `host status`)."""
    name = f"_mta-sts.{domain}"
    try:
        answer = await dns.records(name, "TXT")
    except DnsLookupError as exc:
        return TxtSeen(name, None, error=exc.reason)
    joined = tuple(b"".join(s).decode("ascii", "backslashreplace") for s in answer.strings)
    result = select_sts_record([list(s) for s in answer.strings])
    return TxtSeen(name, result, joined, answer.chain, answer.ttl)


async def addresses(name: str, dns: DnsClient) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    """Every A and AAAA address of `name` (both asked; IPv4 first, in numeric order, so runs
    over the same records judge them in the same order), and the CNAME chain to them."""
    v4, v6 = await asyncio.gather(dns.records(name, "A"), dns.records(name, "AAAA"))
    return sorted([*v4.texts, *v6.texts], key=address_order), v4.chain or v6.chain


async def _policy_host(domain: str, reach: Reach) -> PolicyHostSeen:
    host = f"mta-sts.{domain}"
    try:
        found, chain = await addresses(host, reach.dns)
    except DnsLookupError as exc:
        return PolicyHostSeen(host, error=exc.reason)
    seen = await asyncio.gather(*(_policy_address(domain, host, a, reach) for a in found))
    return PolicyHostSeen(host, chain, tuple(seen))


async def _policy_address(domain: str, host: str, address: str, reach: Reach) -> PolicyAddressSeen:
    if not reach.allow_private and not is_public(address):
        return PolicyAddressSeen(address, not_public=True)
    tls = await inspect_tls(address, reach.https_port, host, reach.ca_file, reach.timeout)
    if tls.connect_error is not None:
        return PolicyAddressSeen(address, connect_error=tls.connect_error)
    try:
        answer = await reach.fetcher.exchange(domain, address)
    except PolicyFetchError as exc:
        return PolicyAddressSeen(
            address,
            tls_error=tls.tls_error,
            cert=tls.cert,
            tls_version=tls.version,
            fetch_error=exc.reason,
        )
    return PolicyAddressSeen(
        address,
        tls_error=tls.tls_error,
        cert=tls.cert,
        tls_version=answer.tls_version,
        status=answer.status,
        headers=answer.headers,
        body=answer.body,
        oversize=answer.oversize,
    )


async def _mx(domain: str, reach: Reach) -> MxSeen:
    return await observe_mx(domain, reach.dns)


async def observe_mx(domain: str, dns: DnsClient) -> MxSeen:
    """The MX RRset as senders use it: null MX (RFC 7505) and implicit MX (RFC 5321 §5.1: no
    MX record, the domain itself) told apart, and a domain that does not exist, which has
    neither (also `generate`'s coverage check)."""
    try:
        answer = await dns.records(domain, "MX")
    except DnsLookupError as exc:
        return MxSeen(error=exc.reason)
    if answer.nxdomain:
        return MxSeen(nxdomain=True)
    records = sorted((int(p), h) for p, _, h in (t.partition(" ") for t in answer.texts))
    hosts = tuple(h for _, h in records if h != ".")
    if records and not hosts:
        return MxSeen(null=True)
    if not records:
        return MxSeen(hosts=(domain,), implicit=True)
    return MxSeen(hosts=hosts)


async def _mx_host(host: str, reach: Reach) -> MxHostSeen:
    try:
        (found, _), tlsa = await asyncio.gather(addresses(host, reach.dns), _tlsa(host, reach.dns))
    except DnsLookupError as exc:
        return MxHostSeen(host, error=exc.reason)
    probes = await asyncio.gather(*(_mx_address(host, a, reach) for a in found))
    return MxHostSeen(host, tuple(probes), tlsa=bool(tlsa.texts), tlsa_validated=tlsa.authenticated)


async def _tlsa(host: str, dns: DnsClient) -> RecordSet:
    return await dns.records(f"_25._tcp.{host}", "TLSA")


async def _mx_address(host: str, address: str, reach: Reach) -> MxAddressSeen:
    if not reach.allow_private and not is_public(address):
        return MxAddressSeen(address, not_public=True)
    return MxAddressSeen(address, probe=await reach.prober.probe_at(host, address))


async def _tlsrpt(domain: str, reach: Reach) -> TlsRptSeen:
    name = f"_smtp._tls.{domain}"
    try:
        answer = await reach.dns.records(name, "TXT")
    except DnsLookupError as exc:
        return TlsRptSeen(name, error=exc.reason)
    texts = [b"".join(s).decode("utf-8", "replace") for s in answer.strings]
    candidates = tuple(t for t in texts if is_candidate(t))
    if len(candidates) != 1:
        return TlsRptSeen(name, candidates)
    return TlsRptSeen(
        name,
        candidates,
        mailto_domains=await _each(
            _mailto_domains(candidates[0]), lambda d: mailto_problem(d, reach.dns)
        ),
        https=await _each(_https_uris(candidates[0]), lambda u: _https(u, reach)),
    )


def _mailto_domains(text: str) -> list[str]:
    try:
        record = parse_tlsrpt_record(text)
    except RecordSyntaxError:
        return []
    targets = (d.target for d in record.destinations if d.kind == "mailto")
    return list(dict.fromkeys(t.rpartition("@")[2].lower() for t in targets))


def _https_uris(text: str) -> list[str]:
    try:
        record = parse_tlsrpt_record(text)
    except RecordSyntaxError:
        return []
    return [d.target for d in record.destinations if d.kind == "https"]


async def _https(uri: str, reach: Reach) -> tuple[EndpointProblem, ...]:
    return await https_problems(uri, reach.dns, reach.ca_file, reach.timeout, reach.allow_private)


async def _each(items: list[str], check: Callable[[str], Awaitable[T]]) -> dict[str, T]:
    results = await asyncio.gather(*(check(item) for item in items))
    return dict(zip(items, results, strict=True))
