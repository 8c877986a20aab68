"""The composition root's part for the own-domain tools (`check`, `generate`, `monitor`, and
the monitor inside `serve`).

Kept beside composition.py (same rule: the configuration becomes objects here and nowhere
else) so that module stays one screenful per concern. Command-line overrides arrive as plain
values; `None` means "what the configuration says".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.discovery.client import DEFAULT_USER_AGENT
from mta_sts_policyd.discovery.policy_fetch import MAX_TIMEOUT, PolicyFetcher
from mta_sts_policyd.housekeeping import cancel_and_wait
from mta_sts_policyd.net.dns_client import DnsClient, make_resolver
from mta_sts_policyd.probe.prober import MxProber
from mta_sts_policyd.state_files import MONITOR_STATE_NAME
from mta_sts_policyd.tools.check.gather import Reach, observe_mx
from mta_sts_policyd.tools.check.names import sort_names
from mta_sts_policyd.tools.check.observations import MxSeen, Options
from mta_sts_policyd.tools.monitor.alerts import AlertSettings
from mta_sts_policyd.tools.monitor.run import StateFile, Target, run_forever

log = logging.getLogger(__name__)

MxLookup = Callable[[str], Coroutine[Any, Any, MxSeen]]
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
    """For `generate`: the domain's current MX hosts through the configured resolvers, as
    `check` sees them (an implicit MX is the domain itself; a null MX is none)."""
    dns = _dns(config, nameservers)

    async def lookup(domain: str) -> MxSeen:
        return await observe_mx(domain, dns)

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


# --- monitor (standalone, or inside `serve` with [monitor] in_serve) --------------------------


def monitor_targets(
    config: Config, domains: Sequence[str] = (), base: Options | None = None
) -> tuple[list[Target], list[str]]:
    """(`domains` without expectations, else `[[own_domains]]`, each domain once; why each
    name that is not a domain is not monitored): `sort_names`, the rule of `check`, so one
    bad name does not stop the others."""
    base = base or Options(allow_private=config.monitor.allow_private)
    names: list[tuple[str, tuple[str, ...], str]]
    if domains:
        names = [(d, (), "") for d in domains]
    else:
        names = [(o.domain, o.expect_cname, o.expect_id) for o in config.own_domains]
    found, not_domains = sort_names([name for name, _, _ in names])
    targets = []
    for domain, i in found.items():
        _, cnames, expect_id = names[i]
        options = replace(base, expect_cname=tuple(cnames), expect_id=expect_id or None)
        targets.append(Target(domain, options))
    return targets, not_domains


def alert_settings(
    config: Config, mail_to: Sequence[str] = (), command: Sequence[str] = ()
) -> AlertSettings:
    m = config.monitor
    return AlertSettings(
        mail_to=tuple(mail_to) or m.alert_mail_to,
        mail_from=m.alert_mail_from,
        smtp_relay=m.smtp_relay,
        command=tuple(command) or m.alert_command,
    )


def monitor_state(config: Config, path: Path | None = None) -> StateFile:
    return StateFile(path or Path(config.cache.state_dir) / MONITOR_STATE_NAME)


async def start_monitor(config: Config) -> Callable[[], Awaitable[None]]:
    """The monitor loop as a task of `serve`; returns the closer that stops it."""
    targets, not_domains = monitor_targets(config)
    for why in not_domains:  # check-config refuses them too; the others are still monitored
        log.warning("event=monitor-not-a-domain reason=%r", why)
    stack = AsyncExitStack()
    settings = ReachSettings(allow_private=config.monitor.allow_private)
    reach = await open_reach(config, settings, stack)
    m = config.monitor
    task = asyncio.create_task(
        run_forever(
            targets,
            reach,
            monitor_state(config),
            alert_settings(config),
            interval=m.interval,
            jitter=min(m.jitter, m.interval / 2),
        ),
        name="own-domain monitor",
    )

    async def close() -> None:
        await cancel_and_wait([task])
        await stack.aclose()

    return close
