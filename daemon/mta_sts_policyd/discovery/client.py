"""The network side of RFC 8461: `_mta-sts` TXT and MX lookups, and the HTTPS policy fetch.

One `Discovery` per daemon. It owns the resolver (system configuration or explicit
`nameservers`) and the HTTPS client; the policy host is resolved through the same resolver.
The work is split between discovery_dns (dnspython) and discovery_https (httpx); library
exceptions never leave those two modules: callers see DnsLookupError and PolicyFetchError only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType

from mta_sts_policyd import __version__
from mta_sts_policyd.discovery.http_rules import MAX_BODY
from mta_sts_policyd.discovery.policy_fetch import MAX_TIMEOUT, FetchResult, PolicyFetcher
from mta_sts_policyd.errors import (
    ConfigError,
    DiscoveryError,
    DnsLookupError,
    InvalidName,
    PolicyFetchError,
)
from mta_sts_policyd.net.dns_client import DnsClient, Later, MxLookup, StsTxtLookup, make_resolver
from mta_sts_policyd.sts.model import TxtRecord
from mta_sts_policyd.sts.names import to_a_label

__all__ = ["MAX_BODY", "MAX_TIMEOUT", "Discovery", "FetchResult", "MxLookup", "StsTxtLookup"]

DEFAULT_USER_AGENT = f"mta-sts-policyd/{__version__}"


class Discovery:
    """DNS and HTTPS discovery of MTA-STS policies with the RFC 8461 limits."""

    def __init__(
        self,
        *,
        nameservers: Sequence[str] = (),
        dns_timeout: float = 5.0,
        fetch_timeout: float = 10.0,
        ca_file: str | None = None,
        https_port: int = 443,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if dns_timeout <= 0 or fetch_timeout <= 0:
            raise ConfigError("dns_timeout and fetch_timeout must be positive")
        if not 0 < https_port < 65536:
            raise ConfigError(f"https_port {https_port} out of range")
        self._dns = DnsClient(make_resolver(nameservers, dns_timeout))
        self._fetcher = PolicyFetcher(
            self._dns,
            timeout=fetch_timeout,
            ca_file=ca_file,
            https_port=https_port,
            user_agent=user_agent,
        )

    async def lookup_txt(self, domain: str, *, fetch_likely: bool = False) -> StsTxtLookup:
        """The `_mta-sts` TXT record of `domain`, CNAMEs followed (RFC 8461 §3.1).

        NXDOMAIN/NODATA -> result TxtAbsent; SERVFAIL, REFUSED, timeout -> DnsLookupError.
        `fetch_likely`: a policy fetch follows if a record exists (a cold lookup that Postfix
        waits for), so the policy host's A question goes out in parallel with this one: one
        round trip less for a domain with a policy, one DNS question more for one without.
        """
        name = _name(domain, DnsLookupError)
        if not fetch_likely:
            return await self._dns.txt(name)
        self._fetcher.prefetch_host(name)
        try:
            lookup = await self._dns.txt(name)
        except BaseException:
            self._fetcher.discard_host(name)
            raise
        if not isinstance(lookup.result, TxtRecord):
            self._fetcher.discard_host(name)
        return lookup

    async def lookup_mx(self, domain: str) -> tuple[str, ...]:
        """MX host names (lower case, no trailing dot) by preference; () when there are none."""
        return await self._dns.mx(_name(domain, DnsLookupError))

    async def lookup_mx_ttl(self, domain: str) -> MxLookup:
        """MX host names with the TTL of the answer (exact wildcards re-read them when it ends)."""
        return await self._dns.mx_lookup(_name(domain, DnsLookupError))

    def mx_later(self, domain: str) -> Later:
        """Ask for the MX set now, parse the answer only if it is read (`await later.mx()`)."""
        return self._dns.mx_later(_name(domain, DnsLookupError))

    async def lookup_addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of a host (for the MX probe); DnsLookupError on failure."""
        return await self._dns.addresses(host)

    async def dane_protected(self, mx_hosts: Sequence[str]) -> bool:
        """RFC 8461 §2: any MX with DNSSEC-validated TLSA makes the destination DANE's.

        A failed TLSA lookup counts as "not protected" (MTA-STS then applies, fail-open).
        """
        checks = [self._dns.tlsa_authenticated(_name(h, DnsLookupError)) for h in mx_hosts]
        results = await asyncio.gather(*checks, return_exceptions=True)
        return any(result is True for result in results)

    async def fetch_policy(self, domain: str) -> FetchResult:
        """Fetch and validate the policy file of `domain`; PolicyFetchError classifies failures."""
        return await self._fetcher.fetch(_name(domain, PolicyFetchError))

    async def aclose(self) -> None:
        await self._fetcher.aclose()

    async def __aenter__(self) -> Discovery:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _name(domain: str, error: type[DiscoveryError]) -> str:
    """The A-label form of a domain to ask about (surrounding space and trailing dots dropped)."""
    try:
        name = to_a_label(domain.strip().rstrip("."))
    except InvalidName as exc:
        raise error(f"invalid domain name {domain!r}: {exc}") from None
    if not name or name.startswith(".") or ".." in name:
        raise error(f"invalid domain name {domain!r}")
    return name
