"""The I/O half of `host status`: what the host serves (its policy folder and certificates, as
the running host loads them) and what public DNS says about each served domain. No judging."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.host.certificates import CertificateSet
from mta_sts_policyd.host.documents import PolicyDocuments
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.tools.check.gather import addresses, observe_txt
from mta_sts_policyd.tools.host_status.judge import HostedSeen


def served(policy_dir: Path, cert_dirs: Sequence[Path]) -> tuple[PolicyDocuments, CertificateSet]:
    """Policies and certificates, loaded by the host's own rules (refusals are logged)."""
    documents = PolicyDocuments(policy_dir)
    documents.reload()
    certificates = CertificateSet(cert_dirs)
    certificates.reload()
    return documents, certificates


CONCURRENCY = 10
"""Domains observed at a time (each asks 3-4 DNS questions), as `check --concurrency`'s default."""
RATE = 20.0
"""Domains started per second at most: 1,000 domains are a pass of 50 s at ~70 questions/s,
not a burst of 3,000 questions at the resolver."""


async def observe_hosted(
    documents: PolicyDocuments,
    certificates: CertificateSet,
    dns: DnsClient,
    *,
    concurrency: int = CONCURRENCY,
    rate: float = RATE,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[HostedSeen]:
    """Every served domain, in the order of `documents.domains`: at most `concurrency` at a
    time, the k-th started no earlier than k / `rate` seconds after the first."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def paced(k: int, domain: str) -> HostedSeen:
        if k:
            await sleep(k / rate)
        async with gate:
            return await _one(domain, documents, certificates, dns)

    domains = documents.domains
    return list(await asyncio.gather(*(paced(k, d) for k, d in enumerate(domains))))


async def _one(
    domain: str, documents: PolicyDocuments, certificates: CertificateSet, dns: DnsClient
) -> HostedSeen:
    host = f"mta-sts.{domain}"
    txt = await observe_txt(domain, dns)
    try:
        found, chain = await addresses(host, dns)
        error = None
    except DnsLookupError as exc:
        found, chain, error = [], (), exc.reason
    return HostedSeen(
        domain=domain,
        body=documents.get(host) or b"",
        addresses=tuple(found),
        chain=(*chain, *txt.chain),
        address_error=error,
        txt=txt,
        validity=certificates.validity(host),
    )
