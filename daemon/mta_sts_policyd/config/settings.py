"""Typed, validated configuration: frozen dataclasses built from TOML.

Every key has a default so an empty file (or no file) runs. Unknown keys and bad values are errors
that name the key and the expected form; `check-config` prints the effective result.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mta_sts_policyd.config.toml_schema import (
    build_dataclass,
    dataclass_as_dict,
    tables_as_toml,
)
from mta_sts_policyd.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/mta-sts-policyd/config.toml")
DEFAULT_STATE_DIR = "/var/lib/mta-sts-policyd"

StsAttributes = Literal["auto", True, False]
DaneMode = Literal["auto", "off", "notfound", "dane", "dane-only"]


@dataclass(frozen=True)
class ServerConfig:
    """The socketmap listener(s) Postfix talks to."""

    listen: tuple[str, ...] = ("127.0.0.1:8463",)
    """`HOST:PORT`, `[IPv6]:PORT` or `unix:/path`; ignored under systemd socket activation."""
    unix_mode: str = "0660"
    unix_group: str = ""
    max_connections: int = 1000
    idle_timeout: float = 60.0
    sts_attributes: StsAttributes = "auto"
    """Postfix >= 3.10 STS/TLSRPT reply attributes: auto asks `postconf -h mail_version`."""
    dane: DaneMode = "auto"
    """DANE wins over MTA-STS (RFC 8461 §2): the reply for an enforce domain whose MX hosts have
    DNSSEC-validated TLSA records. `notfound` leaves Postfix's own dane level in force; `auto` is
    `notfound` when Postfix's smtp_tls_security_level is dane/dane-only with dnssec support,
    else `off` (Postfix does no DANE, so MTA-STS applies)."""
    exact_wildcards: bool = True
    """Render `*.x` patterns as the MX names they match (one label) instead of Postfix's `.x`."""
    postconf: str = "postconf"


@dataclass(frozen=True)
class DiscoveryConfig:
    """DNS and HTTPS settings of policy discovery (RFC 8461 §3)."""

    nameservers: tuple[str, ...] = ()
    """Empty: the system resolver configuration. Entries `IP`, `IP:PORT` or `[IPv6]:PORT`."""
    dns_timeout: float = 5.0
    fetch_timeout: float = 10.0
    ca_file: str = ""
    """Empty: the operating system's trust store (honours SSL_CERT_FILE)."""
    https_port: int = 443
    """Only for test set-ups: the port policy hosts are fetched from."""


@dataclass(frozen=True)
class CacheConfig:
    """The RFC 8461 §3.3/§5.1 cache state machine and its persistent store."""

    state_dir: str = DEFAULT_STATE_DIR
    txt_recheck: float = 60.0
    cold_wait: float = 3.0
    negative_ttl: float = 300.0
    failure_backoff: float = 300.0
    refresh: bool = True
    refresh_interval: float = 86400.0
    refresh_jitter: float = 3600.0
    refresh_concurrency: int = 20
    memory_entries: int = 5_000
    """Policies kept in memory (LRU, ~1.5 KB each); the rest are answered from the store on
    disk (a local read, never the network)."""
    max_entries: int = 200_000
    flush_interval: float = 1.0


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus exposition; off unless `listen` is set (loopback addresses only)."""

    listen: str = ""


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True)
class DkimConfig:
    domain: str = ""
    selector: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class TlsRptConfig:
    """RFC 8460 reporting: collection, aggregation and delivery."""

    enabled: bool = False
    socket: str = "/run/mta-sts-policyd/tlsrpt.sock"
    """The libtlsrpt datagram socket (`smtp_tlsrpt_socket_name` in Postfix >= 3.10); empty: off."""
    socket_mode: str = "0660"
    socket_group: str = ""
    organization_name: str = ""
    contact_info: str = ""
    retention_days: int = 31
    max_report_bytes: int = 5 * 1024 * 1024
    send_delay_max: float = 14400.0
    retry_window: float = 86400.0
    smtp_relay: str = "localhost:25"
    envelope_sender: str = ""
    allow_unsigned: bool = False
    https_timeout: float = 30.0
    dkim: DkimConfig = field(default_factory=DkimConfig)


@dataclass(frozen=True)
class ProbeConfig:
    """The shadow STARTTLS probe of `testing`-mode domains' MX hosts."""

    enabled: bool = True
    reprobe_interval: float = 21600.0
    timeout: float = 30.0
    concurrency: int = 10
    ehlo_name: str = ""
    port: int = 25
    """Only for test set-ups: the SMTP port MX hosts are probed on."""


@dataclass(frozen=True)
class MaillogConfig:
    """Postfix < 3.10: TLS outcomes from Postfix's log (file or systemd journal)."""

    enabled: bool = False
    path: str = ""
    """A log file (`maillog_file` or syslog's mail log); empty with enabled: the journal."""
    journal_units: tuple[str, ...] = ("postfix*",)
    exclude_syslog_names: tuple[str, ...] = ("postfix/tlsrpt-out",)
    """Sessions of the report sender's own transport are not counted (report loops)."""
    timezone: str = "UTC"
    """Time zone of RFC 3164 timestamps (they carry none)."""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tlsrpt: TlsRptConfig = field(default_factory=TlsRptConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    maillog: MaillogConfig = field(default_factory=MaillogConfig)

    @property
    def state_dir(self) -> Path:
        return Path(self.cache.state_dir)


def _positive(value: float) -> str | None:
    return None if value > 0 else "a number greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "a number >= 0"


def _octal_mode(value: str) -> str | None:
    try:
        ok = 0 <= int(value, 8) <= 0o777
    except ValueError:
        ok = False
    return None if ok else 'an octal file mode such as "0660"'


def _fetch_timeout(value: float) -> str | None:
    return None if 0 < value <= 60 else "seconds, greater than 0 and at most 60 (RFC 8461 §3.3)"


def _port(value: int) -> str | None:
    return None if 0 < value < 65536 else "a TCP port 1-65535"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "server.unix_mode": _octal_mode,
    "server.max_connections": _positive,
    "server.idle_timeout": _positive,
    "discovery.dns_timeout": _positive,
    "discovery.fetch_timeout": _fetch_timeout,
    "discovery.https_port": _port,
    "cache.txt_recheck": _positive,
    "cache.cold_wait": _non_negative,
    "cache.negative_ttl": _non_negative,
    "cache.failure_backoff": _non_negative,
    "cache.refresh_interval": _positive,
    "cache.refresh_jitter": _non_negative,
    "cache.refresh_concurrency": _positive,
    "cache.max_entries": _positive,
    "cache.memory_entries": _positive,
    "cache.flush_interval": _positive,
    "tlsrpt.socket_mode": _octal_mode,
    "tlsrpt.retention_days": _positive,
    "tlsrpt.max_report_bytes": _positive,
    "tlsrpt.send_delay_max": _non_negative,
    "tlsrpt.retry_window": _positive,
    "tlsrpt.https_timeout": _positive,
    "probe.reprobe_interval": _positive,
    "probe.timeout": _positive,
    "probe.concurrency": _positive,
    "probe.port": _port,
}


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    config: Config = build_dataclass(Config, data, checks=_CHECKS)
    _check_cross_field(config)
    return config


def _check_cross_field(config: Config) -> None:
    if not config.server.listen:
        raise ConfigError("server.listen: expected at least one address")
    for address in config.server.listen:
        parse_listen_address(address, "server.listen")
    if config.metrics.listen:
        host, _ = parse_listen_address(config.metrics.listen, "metrics.listen")
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError(f"metrics.listen: expected a loopback address, got {host!r}")
    for ns in config.discovery.nameservers:
        parse_nameserver(ns)
    _check_reporting(config)


def _check_reporting(config: Config) -> None:
    """What sending reports needs, said up front instead of failing at 00:00 UTC."""
    t = config.tlsrpt
    if config.maillog.enabled and not t.enabled:
        raise ConfigError("maillog.enabled: needs tlsrpt.enabled = true (the log feeds reports)")
    if t.enabled:
        for key in ("organization_name", "contact_info", "envelope_sender"):
            if not getattr(t, key):
                raise ConfigError(f"tlsrpt.{key}: required when tlsrpt.enabled = true")
        if "@" not in t.contact_info:
            raise ConfigError(
                f"tlsrpt.contact_info: expected an e-mail address, got {t.contact_info!r}"
            )
        dkim = t.dkim
        if not (dkim.domain and dkim.selector and dkim.key_file) and not t.allow_unsigned:
            raise ConfigError(
                "tlsrpt.dkim: domain, selector and key_file are required to sign report mail "
                "(RFC 8460 §3); set tlsrpt.allow_unsigned = true to send unsigned reports"
            )
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(config.maillog.timezone)
    except (ValueError, KeyError, OSError):
        raise ConfigError(
            f"maillog.timezone: expected a time zone name such as UTC or Europe/Berlin, "
            f"got {config.maillog.timezone!r}"
        ) from None


def parse_listen_address(text: str, key: str) -> tuple[str, int]:
    """`HOST:PORT` / `[V6]:PORT` -> (host, port); `unix:/path` -> ("unix", 0) with the path."""
    if text.startswith("unix:"):
        if not text[5:].startswith("/"):
            raise ConfigError(f"{key}: expected unix:/absolute/path, got {text!r}")
        return "unix", 0
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT, [IPv6]:PORT or unix:/path, got {text!r}")
    return host, int(port)


def parse_nameserver(text: str) -> tuple[str, int]:
    """`IP`, `IP:PORT` or `[IPv6]:PORT` -> (ip, port)."""
    import ipaddress

    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        port = int(port_text) if port_text.isdigit() else -1
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text) if port_text.isdigit() else -1
    try:
        ipaddress.ip_address(host)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(
            f"discovery.nameservers: expected IP, IP:PORT or [IPv6]:PORT, got {text!r}"
        )
    return host, port


def load_config(path: Path | None) -> Config:
    """Read TOML: a missing default file means defaults; a missing named file is an error."""
    target = path or DEFAULT_CONFIG_PATH
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        if path is None:
            return Config()
        raise ConfigError(f"{target}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{target}: not valid TOML: {exc}") from None
    try:
        return config_from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{target}: {exc}") from None


def with_overrides(
    config: Config, *, listen: list[str] | None = None, state_dir: str | None = None
) -> Config:
    """Apply command-line overrides (`--listen`, `--state-dir`)."""
    if listen:
        for address in listen:
            parse_listen_address(address, "--listen")
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, listen=tuple(listen))
        )
    if state_dir:
        config = dataclasses.replace(
            config, cache=dataclasses.replace(config.cache, state_dir=state_dir)
        )
    return config


def config_as_dict(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data (for `check-config` and `--json`)."""
    return dataclass_as_dict(config)


def render_toml(config: Config) -> str:
    """The effective configuration as TOML text (every key, so operators see the defaults)."""
    return tables_as_toml(config_as_dict(config))
