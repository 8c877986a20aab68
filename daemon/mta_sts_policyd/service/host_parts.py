"""The composition root's part for the policy host (`host`, `host status`): its settings,
the received-reports intake behind `[host] reports_path`, where its certificates are, and what
`host status` expects of each domain's DNS.

Kept beside composition.py (same rule: the configuration becomes objects here and nowhere
else); the host's stack (aiohttp) is imported inside the builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mta_sts_policyd.config.settings import Config, parse_listen_address
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.service.composition import make_reports_intake, make_state_dir

if TYPE_CHECKING:
    from mta_sts_policyd.host.run import HostSettings
    from mta_sts_policyd.reports_in.intake import Intake
    from mta_sts_policyd.tools.host_status.judge import Expectations


def host_settings(config: Config) -> HostSettings:
    from mta_sts_policyd.host.run import HostSettings

    listen = tuple(parse_listen_address(a, "host.listen") for a in config.host.listen)
    if any(host == "unix" for host, _ in listen):
        raise ConfigError("host.listen: the policy host listens on TCP (HOST:PORT) only")
    return HostSettings(
        listen=listen,
        policy_dir=Path(config.host.policy_dir),
        cert_dirs=tuple(Path(d) for d in config.host.cert_dirs),
        poll_interval=config.host.poll_interval,
        acme_directory=config.host.acme_directory,
        acme_names=tuple(n.lower().rstrip(".") for n in config.host.acme_names),
        acme_state=make_state_dir(config) / "acme" if config.host.acme_directory else None,
        acme_email=config.host.acme_email,
        acme_ca_file=config.host.acme_ca_file or None,
        reports_path=_reports_path(config.host.reports_path),
        reports_max_bytes=config.host.reports_max_bytes,
    )


def _reports_path(path: str) -> str:
    if path and (not path.startswith("/") or path == "/.well-known/mta-sts.txt"):
        raise ConfigError(
            "host.reports_path: expected a URL path such as /tlsrpt (not the policy's), "
            f"got {path!r}"
        )
    return path


def make_host_intake(config: Config) -> Intake | None:
    """The received-reports intake behind `[host] reports_path`, or None when that is off."""
    return make_reports_intake(config) if config.host.reports_path else None


def host_cert_dirs(config: Config) -> tuple[Path, ...]:
    """Where the host finds certificates: the configured folders and the ACME state's."""
    dirs = tuple(Path(d) for d in config.host.cert_dirs)
    if config.host.acme_directory:
        dirs += (make_state_dir(config) / "acme" / "certs",)
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
