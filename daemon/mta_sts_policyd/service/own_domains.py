"""The composition root's part for the own-domain tools (`check`, `generate`, `monitor`).

Kept beside composition.py (same rule: the configuration becomes objects here and nowhere
else) so that module stays one screenful per concern. Command-line overrides arrive as plain
values; `None` means "what the configuration says".
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.discovery.client import DEFAULT_USER_AGENT
from mta_sts_policyd.discovery.policy_fetch import MAX_TIMEOUT, PolicyFetcher
from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.net.dns_client import DnsClient, make_resolver
from mta_sts_policyd.probe.prober import MxProber
from mta_sts_policyd.tools.check.gather import Reach

MxLookup = Callable[[str], Coroutine[Any, Any, Sequence[str] | None]]
"""Domain -> its MX host names, () for none, None when the lookup failed."""


@dataclass(frozen=True)
class ReachSettings:
    """`check`/`monitor` network options from the command line (None: the config's value)."""

    nameservers: Sequence[str] | None = None
    ca_file: str | None = None
    https_port: int | None = None
    smtp_port: int | None = None
    timeout: float = 10.0
    concurrency: int = 10
    allow_private: bool = False


def _dns(config: Config, nameservers: Sequence[str] | None) -> DnsClient:
    d = config.discovery
    return DnsClient(make_resolver(nameservers or d.nameservers, d.dns_timeout))


def mx_lookup(config: Config, nameservers: Sequence[str] | None = None) -> MxLookup:
    """For `generate`: the domain's current MX hosts through the configured resolvers."""
    dns = _dns(config, nameservers)

    async def lookup(domain: str) -> Sequence[str] | None:
        try:
            return await dns.mx(domain)
        except DnsLookupError:
            return None

    return lookup


async def open_reach(config: Config, settings: ReachSettings, stack: AsyncExitStack) -> Reach:
    """DNS, HTTPS and SMTP clients for one `check`/`monitor` run, closed with `stack`: the
    sender's own fetcher (RFC 8461 limits, fetch deadline capped at 60 s) and prober."""
    dns = _dns(config, settings.nameservers)
    ca_file = settings.ca_file or config.discovery.ca_file or None
    https_port = settings.https_port or config.discovery.https_port
    fetcher = PolicyFetcher(
        dns,
        timeout=min(settings.timeout, MAX_TIMEOUT),
        ca_file=ca_file,
        https_port=https_port,
        user_agent=DEFAULT_USER_AGENT,
    )
    stack.push_async_callback(fetcher.aclose)
    prober = MxProber(
        ca_file=ca_file,
        timeout=settings.timeout,
        concurrency=4 * settings.concurrency,
        ehlo_name=config.probe.ehlo_name or None,
        port=settings.smtp_port or config.probe.port,
    )
    stack.push_async_callback(prober.aclose)
    return Reach(
        dns, fetcher, prober, ca_file, https_port, settings.timeout, settings.allow_private
    )
