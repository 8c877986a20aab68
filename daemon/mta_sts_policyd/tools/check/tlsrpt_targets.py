"""Can TLS reports reach the `rua` destinations? The mail domain must accept mail; an https:
endpoint must pass the TLS check a reporting sender makes (trusted chain, its name, in date) on
every address."""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import urlsplit

from mta_sts_policyd.errors import DnsLookupError, ResultType
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.probe.cert_names import matches_host
from mta_sts_policyd.tools.check.observations import CertSeen, EndpointProblem
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


async def https_problems(
    uri: str, dns: DnsClient, ca_file: str | None, seconds: float, allow_private: bool
) -> tuple[EndpointProblem, ...]:
    """The TLS check of every A and AAAA address of the endpoint (a reporting sender may reach
    any of them): one problem per failing address, none when all pass."""
    parts = urlsplit(uri)
    host, port = (parts.hostname or "").lower(), parts.port or 443
    try:
        v4, v6 = await asyncio.gather(dns.records(host, "A"), dns.records(host, "AAAA"))
    except DnsLookupError as exc:
        return (EndpointProblem(None, f"{host} could not be resolved: {exc.reason}"),)
    found = [*v4.texts, *v6.texts]
    if not found:
        return (EndpointProblem(None, f"{host} has no A or AAAA record"),)
    checks = (_address_problem(host, a, port, ca_file, seconds, allow_private) for a in found)
    return tuple(p for p in await asyncio.gather(*checks) if p is not None)


async def _address_problem(
    host: str, address: str, port: int, ca_file: str | None, seconds: float, allow_private: bool
) -> EndpointProblem | None:
    if not allow_private and not ipaddress.ip_address(address).is_global:
        return EndpointProblem(address, "not a public address; not contacted", not_public=True)
    seen = await inspect_tls(address, port, host, ca_file, seconds)
    problem = seen.connect_error or seen.tls_error
    if problem is None and seen.cert is None:
        problem = "no certificate"
    elif problem is None and seen.cert is not None:
        problem = _cert_problem(seen.cert, host)
    return EndpointProblem(address, problem) if problem is not None else None


def _cert_problem(cert: CertSeen, host: str) -> str | None:
    if cert.verify_error is ResultType.CERTIFICATE_EXPIRED:
        return "certificate expired"
    if cert.verify_error is not None:
        return f"certificate not trusted: {cert.verify_reason}"
    if not matches_host(cert.names, host):
        return f"certificate names [{', '.join(cert.names)}] do not cover {host}"
    return None
