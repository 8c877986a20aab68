"""TXT lookups for `_smtp._tls` records, through the same DNS client as discovery.

Same nameservers option, same transport; the TLSRPT answer shape: NXDOMAIN/NODATA are answers
([]), every other failure is DnsLookupError (retry later).
"""

from __future__ import annotations

from collections.abc import Sequence

from mta_sts_policyd.net.dns_client import DnsClient, make_resolver
from mta_sts_policyd.tlsrpt.record import TxtQuery


def txt_lookup(nameservers: Sequence[str] = (), timeout: float = 5.0) -> TxtQuery:
    """`nameservers` as in the discovery config ("IP", "IP:PORT", "[IPv6]:PORT")."""
    return DnsClient(make_resolver(nameservers, timeout)).txt_strings
