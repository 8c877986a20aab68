"""Can TLS reports reach the `rua` destinations? The mail domain must accept mail; an https:
endpoint must pass the TLS check a reporting sender makes (trusted chain, its name, in date)."""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import urlsplit

from mta_sts_policyd.errors import DnsLookupError, ResultType
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.probe.cert_names import matches_host
from mta_sts_policyd.tools.check.tls_inspect import inspect_tls


async def mailto_problem(domain: str, dns: DnsClient) -> str | None:
    """Why mail to `domain` cannot be delivered (null MX, or neither MX nor address), or None."""
    try:
        answer = await dns.records(domain, "MX")
        if answer.texts:
            hosts = [t.partition(" ")[2] for t in answer.texts]
            return "null MX: the domain accepts no mail" if set(hosts) == {"."} else None
        v4, v6 = await asyncio.gather(dns.records(domain, "A"), dns.records(domain, "AAAA"))
    except DnsLookupError as exc:
        return f"its MX could not be looked up: {exc.reason}"
    return None if v4.texts or v6.texts else "no MX and no address record"


async def https_problem(
    uri: str, dns: DnsClient, ca_file: str | None, seconds: float, allow_private: bool
) -> str | None:
    parts = urlsplit(uri)
    host, port = (parts.hostname or "").lower(), parts.port or 443
    try:
        found = [*(await dns.records(host, "A")).texts, *(await dns.records(host, "AAAA")).texts]
    except DnsLookupError as exc:
        return f"{host} could not be resolved: {exc.reason}"
    if not found:
        return f"{host} has no A or AAAA record"
    address = found[0]
    if not allow_private and not ipaddress.ip_address(address).is_global:
        return None  # not contacted; the policy host and MX checks report such addresses
    seen = await inspect_tls(address, port, host, ca_file, seconds)
    if seen.connect_error or seen.tls_error:
        return seen.connect_error or seen.tls_error
    if seen.cert is None:
        return "no certificate"
    if seen.cert.verify_error is not None:
        expired = seen.cert.verify_error is ResultType.CERTIFICATE_EXPIRED
        return "certificate expired" if expired else f"untrusted: {seen.cert.verify_reason}"
    if not matches_host(seen.cert.names, host):
        return f"certificate names [{', '.join(seen.cert.names)}] do not cover {host}"
    return None
