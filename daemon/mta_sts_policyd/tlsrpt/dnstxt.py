"""TXT lookups for `_smtp._tls` records through the daemon's dnspython resolver.

Reuses discovery_dns.make_resolver (same nameservers option) but keeps the TLSRPT answer shape:
NXDOMAIN/NODATA are answers ([]), every other failure is DnsLookupError (retry later).
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver

from mta_sts_policyd.discovery_dns import make_resolver
from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.tlsrpt.record import TxtLookup


def resolver_txt_lookup(resolver: dns.asyncresolver.Resolver) -> TxtLookup:
    async def lookup(name: str) -> list[list[bytes]]:
        try:
            answer = await resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.DNSException, ValueError) as exc:
            raise DnsLookupError(f"{name} TXT: {exc}") from None
        if answer.rrset is None:
            return []
        return [list(rd.strings) for rd in answer.rrset]

    return lookup


def txt_lookup(nameservers: Sequence[str] = (), timeout: float = 5.0) -> TxtLookup:
    """`nameservers` as in the discovery config ("IP", "IP:PORT", "[IPv6]:PORT")."""
    return resolver_txt_lookup(make_resolver(nameservers, timeout))
