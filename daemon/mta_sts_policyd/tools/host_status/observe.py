"""The I/O half of `host status`: what the host serves (its policy folder and certificates, as
the running host loads them) and what public DNS says about each of its domains. No judging.

Its domains are more than those served: a refused file, a domain served earlier in this
process, one that acme_names lists or that has a certificate here (mta-sts.D) are looked at
too, so that a domain that stopped being served is reported, not left out (judge.reported)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path

from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.host.certificates import CertificateSet
from mta_sts_policyd.host.documents import PolicyDocuments
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.sts.keys import domain_for_name
from mta_sts_policyd.tools.check.gather import addresses, observe_txt
from mta_sts_policyd.tools.host_status.judge import CertRefused, HostedSeen


def served(policy_dir: Path, cert_dirs: Sequence[Path]) -> tuple[PolicyDocuments, CertificateSet]:
    """Policies and certificates, loaded by the host's own rules (refusals are logged)."""
    documents = PolicyDocuments(policy_dir)
    documents.reload()
    certificates = CertificateSet(cert_dirs)
    certificates.reload()
    return documents, certificates


def hosted_domains(
    documents: PolicyDocuments, certificates: CertificateSet, listed: Collection[str]
) -> list[str]:
    """Served, refused and earlier-served domains, and those of `listed` (acme_names) and of
    the certificates here."""
    prefix = "mta-sts."
    named = (n[len(prefix) :] for n in (*listed, *certificates.seen_names) if n.startswith(prefix))
    found = {d for d in (domain_for_name(n) for n in named) if d is not None}
    return sorted({*documents.domains, *documents.refusals, *documents.gone, *found})


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
    listed: Collection[str] = (),
    concurrency: int = CONCURRENCY,
    rate: float = RATE,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[HostedSeen]:
    """Every domain of `hosted_domains`, in order (`listed`: the acme_names): at most
    `concurrency` at a time, the k-th started no earlier than k / `rate` seconds after the
    first."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def paced(k: int, domain: str) -> HostedSeen:
        if k:
            await sleep(k / rate)
        async with gate:
            return await _one(domain, documents, certificates, dns, listed)

    domains = hosted_domains(documents, certificates, listed)
    return list(await asyncio.gather(*(paced(k, d) for k, d in enumerate(domains))))


async def _one(
    domain: str,
    documents: PolicyDocuments,
    certificates: CertificateSet,
    dns: DnsClient,
    listed: Collection[str],
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
        body=documents.get(host),
        addresses=tuple(found),
        chain=(*chain, *txt.chain),
        address_error=error,
        txt=txt,
        validity=certificates.validity(host),
        refused=documents.refusals.get(domain),
        policy_file=str(documents.policy_file(domain)),
        listed=host in listed,
        cert_refused=_cert_refused(certificates, host),
    )


def _cert_refused(certificates: CertificateSet, host: str) -> CertRefused | None:
    refusal = certificates.refusal(host)
    if refusal is None:
        return None
    return CertRefused(str(refusal.file), refusal.reason, refusal.expired_at)
