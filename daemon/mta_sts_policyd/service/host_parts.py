"""The composition root's part for the policy host (`host`, `host status`): its settings,
the received-reports intake behind `[host] reports_path`, where its certificates are, and what
`host status` expects of each domain's DNS.

Kept beside composition.py (same rule: the configuration becomes objects here and nowhere
else); the host's stack (aiohttp) is imported inside the builders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mta_sts_policyd.config.settings import (
    REMOTE_METRICS_HINT,
    Config,
    check_listen_list,
    parse_listen_address,
)
from mta_sts_policyd.errors import ConfigError, StateUnusableError
from mta_sts_policyd.service.composition import make_reports_intake, own_report_domains

if TYPE_CHECKING:
    from mta_sts_policyd.host.run import Extras, HostSettings, PolicyHost, Reconfigure
    from mta_sts_policyd.metrics.http import MetricsServer
    from mta_sts_policyd.reports_in.intake import BodyIntake
    from mta_sts_policyd.tools.host_status.judge import Expectations

log = logging.getLogger(__name__)


def host_settings(config: Config) -> HostSettings:
    from mta_sts_policyd.host.run import HostSettings

    listen = _tcp_listen(config.host.listen, "host.listen")
    http_listen: tuple[tuple[str, int], ...] = ()
    if config.host.acme_directory and config.host.acme_challenge == "http-01":
        http_listen = _tcp_listen(config.host.http_listen, "host.http_listen")
    return HostSettings(
        listen=listen,
        policy_dir=Path(config.host.policy_dir),
        cert_dirs=tuple(Path(d) for d in config.host.cert_dirs),
        poll_interval=config.host.poll_interval,
        acme_directory=config.host.acme_directory,
        acme_names=acme_names(config),
        acme_state=host_state_dir(config) / "acme" if config.host.acme_directory else None,
        acme_email=config.host.acme_email,
        acme_ca_file=config.host.acme_ca_file or None,
        reports_path=_reports_path(config.host.reports_path),
        reports_max_bytes=config.host.reports_max_bytes,
        acme_challenge=config.host.acme_challenge,
        http_listen=http_listen,
    )


def acme_names(config: Config) -> tuple[str, ...]:
    """`[host] acme_names` as the host compares names: lower case, no final dot."""
    return tuple(n.lower().rstrip(".") for n in config.host.acme_names)


def check_host(config: Config) -> None:
    """`[host]` as `host` reads it at start, without starting or creating anything (run by
    `check-config`); ConfigError lists every problem."""
    from mta_sts_policyd.sts.keys import domain_for_name

    h, problems = config.host, list[str]()
    http_01 = bool(h.acme_directory) and h.acme_challenge == "http-01"
    checks: list[Callable[[], object]] = [
        lambda: _tcp_listen(h.listen, "host.listen"),
        lambda: (_tcp_listen if http_01 else _listen_entries)(h.http_listen, "host.http_listen"),
        lambda: _reports_path(h.reports_path),
        lambda: host_expectations(config),
        lambda: h.metrics_listen and _metrics_address(config),
    ]
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            problems += exc.problems
    problems += [  # acme_names: config/cross_keys.py
        f"host.expect_cname[{i}]: expected a host name, got {name!r}"
        for i, name in enumerate(h.expect_cname)
        if domain_for_name(name.rstrip(".")) is None
    ]
    if problems:
        raise ConfigError(*problems)


def host_warnings(config: Config) -> list[str]:
    """What `check-config` warns about `[host]` on this machine, each "key: why": a policy
    folder that does not exist loads, but the host serves nothing from it. Said for a
    `policy_dir` written in the file, or once the host has run here (its state folder exists);
    the default folder of a host not yet started is no news."""
    from mta_sts_policyd.config.settings import HostConfig
    from mta_sts_policyd.host.documents import folder_problem

    h = config.host
    if h.policy_dir == HostConfig().policy_dir and not Path(h.state_dir).is_dir():
        return []
    problem = folder_problem(Path(h.policy_dir))
    if problem is None:
        return []
    return [
        f"host.policy_dir: {h.policy_dir} {problem}: the host serves no policy until it exists"
        " (publish and generate --write create it)"
    ]


def host_state_dir(config: Config) -> Path:
    """`[host] state_dir`, created 0700 if missing (the ACME account and certificates)."""
    from mta_sts_policyd.state_files import make_private_dir

    path = Path(config.host.state_dir)
    try:
        make_private_dir(path)
    except StateUnusableError as exc:
        raise StateUnusableError(str(exc).replace("cache.state_dir", "host.state_dir")) from None
    return path


def _metrics_address(config: Config) -> tuple[str, int]:
    """`[host] metrics_listen` as (host, port): loopback unless `metrics.allow_remote`."""
    from mta_sts_policyd import metrics

    key = "host.metrics_listen"
    address = parse_listen_address(config.host.metrics_listen, key)
    try:
        metrics.loopback_host(address[0], allow_remote=True)  # an IP address at all
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    try:
        metrics.loopback_host(address[0], allow_remote=config.metrics.allow_remote)
    except ValueError as exc:  # naming the opt-in: left out when that key was refused
        raise ConfigError(f"{key}: {exc} ({REMOTE_METRICS_HINT})") from None
    return address


def _tcp_listen(addresses: Sequence[str], key: str) -> tuple[tuple[str, int], ...]:
    """`[host] listen` / `http_listen` as (host, port) pairs: at least one, each bad entry
    named by its index and none twice (`check_listen_list`, the rule of `server.listen`)."""
    if not addresses:
        raise ConfigError(f"{key}: expected at least one HOST:PORT (the policy host's TCP)")
    check_listen_list(addresses, key, tcp_only=True)
    return tuple(parse_listen_address(a, key) for a in addresses)


HOST_APPLIES: dict[str, tuple[str, ...] | None] = {"host": ("acme_names", "poll_interval")}
"""What a SIGHUP changes in the running host (PolicyHost.apply), besides re-reading files."""
HOST_SECTIONS = ("host", "logging", "discovery", "metrics", "reports_in")
"""The tables the host reads; a change elsewhere is the daemon's, not the host's, business."""


def host_reconfigure(started: Config, path: Path | None) -> Reconfigure:
    """SIGHUP: re-read the configuration file, apply what the host can take in, and say which
    changed keys wait for a restart (compared with what the host started with)."""
    from mta_sts_policyd.config.settings import load_config
    from mta_sts_policyd.service.reload import (
        log_reload_failed,
        log_restart_only,
        restart_only_changes,
    )

    def reconfigure(host: PolicyHost) -> None:
        try:
            fresh = load_config(path)
            settings = host_settings(fresh)
        except ConfigError as exc:
            log_reload_failed(log, exc)
            return
        changed = restart_only_changes(started, fresh, HOST_APPLIES)
        log_restart_only(log, [key for key in changed if key.partition(".")[0] in HOST_SECTIONS])
        host.apply(settings)

    return reconfigure


def _listen_entries(addresses: Sequence[str], key: str) -> None:
    """A listener list not in use (http_listen without http-01): each entry valid, none needed."""
    check_listen_list(addresses, key, tcp_only=True)


def host_extras(config: Config) -> Extras | None:
    """With `[host] metrics_listen`: the host's own metrics endpoint and the periodic
    `host status` behind its per-domain gauges (started once the host's state exists)."""
    if not config.host.metrics_listen:
        return None
    from mta_sts_policyd.service.composition import dns_client
    from mta_sts_policyd.tools.check.observations import Options
    from mta_sts_policyd.tools.host_status.gauges import HostedGauges, watch

    address = _metrics_address(config)
    expect = host_expectations(config)

    def extras(host: PolicyHost) -> list[Coroutine[Any, Any, None]]:
        """Binds the endpoint at once (OSError like a listener: exit 75), then the checks."""
        from mta_sts_policyd import metrics

        gauges = HostedGauges(host.documents, host.certificates)
        remote = config.metrics.allow_remote
        try:
            server = metrics.serve_registry(*address, gauges.registry(), allow_remote=remote)
        except OSError as exc:  # named as a listener's bind failure is
            where = "host.metrics_listen {}:{}".format(*address)
            raise OSError(exc.errno, f"{where}: {exc.strerror or exc}") from None
        log.info("event=metrics-listening address=%s:%d", server.host, server.port)
        interval, names = config.host.status_interval, lambda: host.settings.acme_names
        watcher = watch(gauges, dns_client(config), expect, Options(), interval, names)
        return [_exposed(server, watcher)]

    return extras


async def _exposed(server: MetricsServer, watcher: Coroutine[Any, Any, None]) -> None:
    """The checks behind the endpoint; the endpoint closes with them."""
    try:
        await watcher
    finally:
        server.close()


def _reports_path(path: str) -> str:
    if path and (not path.startswith("/") or path == "/.well-known/mta-sts.txt"):
        raise ConfigError(
            "host.reports_path: expected a URL path such as /tlsrpt (not the policy's), "
            f"got {path!r}"
        )
    return path


def make_host_intake(config: Config) -> BodyIntake | None:
    """What takes the reports POSTed to `[host] reports_path` (None when that is off): the
    spool that `serve` takes in (`reports_in.spool_dir`, the shipped units), else the store."""
    if not config.host.reports_path:
        return None
    spool = config.reports_in.spool_dir
    if not spool:
        return make_reports_intake(config)
    import os
    import time

    from mta_sts_policyd.reports_in.intake import Quarantine
    from mta_sts_policyd.reports_in.spool import SpoolIntake

    root = Path(spool)
    for sub in ("tmp", "new"):
        if not os.access(root / sub, os.W_OK | os.X_OK):
            raise ConfigError(
                f"reports_in.spool_dir: {root / sub} is not a folder this user may write: "
                "create the spool (systemd/mta-sts-policyd.tmpfiles, docs/reports-in.md)"
            )
    domains = own_report_domains(config)
    if not domains:
        raise ConfigError("reports_in.domains is empty: name the own domains")
    quarantine = Quarantine(
        host_state_dir(config) / "reports-in-quarantine", config.reports_in.quarantine_keep
    )
    return SpoolIntake(root, domains, quarantine, time.time)


def host_cert_dirs(config: Config) -> tuple[Path, ...]:
    """Where the host finds certificates: the configured folders and the ACME state's (for
    `host status`, which only reads: nothing is created)."""
    dirs = tuple(Path(d) for d in config.host.cert_dirs)
    if config.host.acme_directory:
        dirs += (Path(config.host.state_dir) / "acme" / "certs",)
    return dirs


def host_expectations(config: Config) -> Expectations:
    """`[host] expect_addresses` / `expect_cname` for `host status`, normalised."""
    import ipaddress

    from mta_sts_policyd.tools.host_status.judge import Expectations

    try:
        addresses = frozenset(str(ipaddress.ip_address(a)) for a in config.host.expect_addresses)
    except ValueError as exc:
        raise ConfigError(f"host.expect_addresses: {exc}") from None
    cnames = frozenset(n.rstrip(".").lower() for n in config.host.expect_cname)
    return Expectations(addresses, cnames)
