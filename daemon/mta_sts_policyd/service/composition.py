"""The composition root: the one place where the configuration becomes objects.

The running daemon (daemon.py, optional.py, reporting.py) and the CLI commands (`serve`,
`resolve`, `probe`, `report`, `cache`) take their parts from here (the TLS-RPT pipeline and
the testing-mode shadow from tlsrpt_parts.py, the own-domain tools `check`, `generate` and
`monitor` from own_domains.py, both beside it), so a setting means the same
in each, and no other module reads a config section to build something. The parts themselves
receive plain settings and never see the `Config` (pyproject's import contracts check that).

The TLS-RPT and probe stacks (dkimpy, cryptography, smtplib) are imported inside their
builders: `serve` without TLS-RPT never loads them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mta_sts_policyd.config.settings import Config, parse_listen_address
from mta_sts_policyd.discovery.client import Discovery
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.policy.cache import PolicyCache, PolicyStore
from mta_sts_policyd.policy.resolver import LookupSettings, PolicyResolver
from mta_sts_policyd.policy.stats import LATENCY_BUCKETS
from mta_sts_policyd.postfix.postconf import dane_reply, sts_attributes_enabled
from mta_sts_policyd.postfix.server import SocketmapServer
from mta_sts_policyd.state_files import (
    CONTROL_NAME,
    POLICY_STORE_NAME,
    REPORTS_IN_QUARANTINE,
    REPORTS_IN_STORE_NAME,
    make_private_dir,
)

if TYPE_CHECKING:
    from mta_sts_policyd.net.dns_client import DnsClient
    from mta_sts_policyd.probe.prober import MxProber
    from mta_sts_policyd.reports_in.intake import Intake
    from mta_sts_policyd.reports_in.readiness import Verdict
    from mta_sts_policyd.reports_in.store import ReportsInStore

log = logging.getLogger(__name__)

AddressLookup = Callable[[str], Awaitable[list[str]]]

# --- the policy side (every `serve`) ----------------------------------------------------------


def decide_sts_attributes(config: Config) -> bool:
    """Whether replies carry Postfix 3.10's STS attributes (`auto`: ask Postfix's version)."""
    return sts_attributes_enabled(config.server.sts_attributes, config.server.postconf)


def lookup_settings(config: Config) -> LookupSettings:
    """The resolver's settings; asks Postfix (version, DANE) where the config says `auto`."""
    c = config.cache
    return LookupSettings(
        txt_recheck=c.txt_recheck,
        cold_wait=c.cold_wait,
        negative_ttl=c.negative_ttl,
        failure_backoff=c.failure_backoff,
        refresh=c.refresh,
        refresh_interval=c.refresh_interval,
        refresh_jitter=c.refresh_jitter,
        refresh_concurrency=c.refresh_concurrency,
        sts_attributes=decide_sts_attributes(config),
        exact_wildcards=config.server.exact_wildcards,
        dane_reply=dane_reply(config.server.dane, config.server.postconf),
    )


def make_discovery(config: Config) -> Discovery:
    d = config.discovery
    return Discovery(
        nameservers=d.nameservers,
        dns_timeout=d.dns_timeout,
        fetch_timeout=d.fetch_timeout,
        ca_file=d.ca_file or None,
        https_port=d.https_port,
    )


def make_state_dir(config: Config) -> Path:
    """The state directory, created 0700 if missing; StateUnusableError says how to get one."""
    make_private_dir(config.state_dir)
    return config.state_dir


def make_policy_cache(config: Config) -> PolicyCache:
    return PolicyCache(
        PolicyStore(make_state_dir(config) / POLICY_STORE_NAME),
        memory_entries=config.cache.memory_entries,
        max_entries=config.cache.max_entries,
    )


def make_resolver(
    config: Config, discovery: Discovery, cache: PolicyCache, clock: Callable[[], float]
) -> PolicyResolver:
    return PolicyResolver(discovery, cache, lookup_settings(config), clock=clock)


def make_socketmap_server(config: Config, resolver: PolicyResolver) -> SocketmapServer:
    s = config.server
    return SocketmapServer(
        resolver.answer,
        max_connections=s.max_connections,
        idle_timeout=s.idle_timeout,
        fast_reply=resolver.memo.reply,
    )


def start_metrics(
    config: Config, resolver: PolicyResolver, server: SocketmapServer
) -> Callable[[], Any]:
    """The Prometheus exposition of the resolver's and server's counters (loopback unless
    metrics.allow_remote); returns its closer."""
    from mta_sts_policyd import metrics

    metrics.bind_lookup_stats(resolver.stats, LATENCY_BUCKETS)
    metrics.CACHE_ENTRIES.set_function(lambda: float(len(resolver.cache)))
    metrics.CONNECTIONS_REFUSED.set_function(lambda: float(server.rejected_connections))
    bind_report_gauges(config)
    host, port = parse_listen_address(config.metrics.listen, "metrics.listen")
    exposition = metrics.start_metrics_server(host, port, allow_remote=config.metrics.allow_remote)
    log.info("event=metrics-listening address=%s:%d", exposition.host, exposition.port)
    return exposition.close


def bind_report_gauges(config: Config) -> None:
    """Own domains' received-report gauges, when reports-in keeps any domain here."""
    domains = own_report_domains(config)
    if domains:
        from datetime import UTC, datetime

        from mta_sts_policyd.reports_in import gauges

        store = config.state_dir / REPORTS_IN_STORE_NAME
        gauges.bind(store, tuple(sorted(domains)), lambda: datetime.now(UTC))


def control_socket_path(config: Config) -> Path:
    """The running daemon's control socket (`cache` commands)."""
    return config.state_dir / CONTROL_NAME


# --- the probe (shadow checks, `probe`) -------------------------------------------------------


def address_lookup(config: Config) -> AddressLookup:
    """A host's addresses through the configured nameservers (the `probe` command)."""
    return dns_client(config).addresses


def make_prober(
    config: Config,
    resolve: AddressLookup,
    *,
    port: int | None = None,
    timeout: float | None = None,
    one_off: bool = False,
) -> MxProber:
    """The daemon's shared prober, or with `one_off` the `probe` command's (one at a time)."""
    from mta_sts_policyd.probe.prober import MxProber

    p = config.probe
    extra: dict[str, Any] = {} if one_off else {"reprobe_interval": p.reprobe_interval}
    return MxProber(
        ca_file=config.discovery.ca_file or None,
        timeout=timeout or p.timeout,
        concurrency=1 if one_off else p.concurrency,
        ehlo_name=p.ehlo_name or None,
        port=p.port if port is None else port,
        resolve=resolve,
        **extra,
    )


# --- received TLS reports (own domains) --------------------------------------------------------


def own_report_domains(config: Config, extra: Sequence[str] = ()) -> frozenset[str]:
    """`reports_in.domains`, `[[own_domains]]` and `extra` (command line) as A-labels, by the
    rule every own-domain command uses (`domain_for_name`); ConfigError lists each name that
    is not a domain (also run by `check-config`)."""
    from mta_sts_policyd.sts.keys import domain_for_name

    named = [(f"reports_in.domains[{i}]", d) for i, d in enumerate(config.reports_in.domains)]
    named += [(f"own_domains[{i}].domain", o.domain) for i, o in enumerate(config.own_domains)]
    named += [("--domain", d) for d in extra]
    names, problems = set(), []
    for key, name in named:
        domain = domain_for_name(name.strip())
        if domain is None:
            problems.append(f"{key}: expected a domain name, got {name!r}")
        else:
            names.add(domain)
    if problems:
        raise ConfigError(*problems)
    return frozenset(names)


def open_reports_in_store(config: Config) -> ReportsInStore:
    from mta_sts_policyd.reports_in.store import ReportsInStore

    return ReportsInStore(make_state_dir(config) / REPORTS_IN_STORE_NAME)


def read_reports_in_store(config: Config) -> ReportsInStore | None:
    """The received reports for a command that only reads them (`ReportsInStore.reader`)."""
    from mta_sts_policyd.reports_in.store import ReportsInStore

    return ReportsInStore.reader(config.state_dir / REPORTS_IN_STORE_NAME)


def enforce_readiness(config: Config, domain: str, served_lines: list[str]) -> Verdict | None:
    """The readiness verdict from the received reports, or None when none are kept here.

    `generate --mode enforce` (and `publish`) consult it: with a reports-in store in the state
    directory, switching a domain whose reports show trouble needs `--force`.
    """
    from datetime import UTC, date, datetime

    from mta_sts_policyd.reports_in.readiness import readiness, served_from_text

    store = read_reports_in_store(config)
    if store is None:
        return None
    try:
        counted = store.counted_days(domain, date.min, datetime.now(UTC))
        return readiness(
            domain,
            served_from_text(served_lines),
            counted.policies,
            counted.failures,
            min_days=config.reports_in.min_days,
            min_organizations=config.reports_in.min_organizations,
            not_counted_future=counted.not_counted_future,
        )
    finally:
        store.close()


def make_reports_intake(config: Config, extra_domains: Sequence[str] = ()) -> Intake:
    """The intake of received reports: store, own domains, quarantine in the state directory."""
    import time

    from mta_sts_policyd.reports_in.intake import Intake, Quarantine

    domains = own_report_domains(config, extra_domains)
    if not domains:
        raise ConfigError("reports_in.domains is empty: name the own domains (or --domain)")
    quarantine = Quarantine(
        make_state_dir(config) / REPORTS_IN_QUARANTINE, config.reports_in.quarantine_keep
    )
    return Intake(
        open_reports_in_store(config),
        domains,
        quarantine,
        time.time,
        retention_days=config.reports_in.retention_days,
    )


def dns_client(config: Config, nameservers: Sequence[str] | None = None) -> DnsClient:
    """A DNS client through `nameservers` or the configured ones (`probe`, `host status`)."""
    from mta_sts_policyd.net.dns_client import DnsClient, make_resolver

    d = config.discovery
    return DnsClient(make_resolver(nameservers or d.nameservers, d.dns_timeout))
