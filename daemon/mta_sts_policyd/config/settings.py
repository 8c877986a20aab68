"""Typed, validated configuration: TOML in, the frozen `Config` (sections.py) out.

The config part's entry point: loading, the checks that need more than one key, command-line
overrides and `check-config`'s rendering; it re-exports the sections. Unknown keys and bad
values are errors that name the key and the expected form (value_checks.py, toml_schema.py).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mta_sts_policyd.config.sections import (
    DEFAULT_STATE_DIR,
    CacheConfig,
    Config,
    DiscoveryConfig,
    DkimConfig,
    HostConfig,
    LoggingConfig,
    MaillogConfig,
    MetricsConfig,
    MonitorConfig,
    OwnDomainConfig,
    ProbeConfig,
    ReportsInConfig,
    ServerConfig,
    TlsRptConfig,
)
from mta_sts_policyd.config.toml_schema import (
    build_dataclass,
    dataclass_as_dict,
    tables_as_toml,
)
from mta_sts_policyd.config.value_checks import CHECKS
from mta_sts_policyd.endpoints import parse_nameserver
from mta_sts_policyd.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_STATE_DIR",
    "CacheConfig",
    "Config",
    "DiscoveryConfig",
    "DkimConfig",
    "HostConfig",
    "LoggingConfig",
    "MaillogConfig",
    "MetricsConfig",
    "MonitorConfig",
    "OwnDomainConfig",
    "ProbeConfig",
    "ReportsInConfig",
    "ServerConfig",
    "TlsRptConfig",
    "config_as_dict",
    "config_from_mapping",
    "load_config",
    "parse_listen_address",
    "render_toml",
    "with_overrides",
]

DEFAULT_CONFIG_PATH = Path("/etc/mta-sts-policyd/config.toml")


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    config: Config = build_dataclass(Config, data, checks=CHECKS)
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
    for i, ns in enumerate(config.discovery.nameservers):
        parse_nameserver(ns, f"discovery.nameservers[{i}]")
    for i, own in enumerate(config.own_domains):
        if "." not in own.domain or " " in own.domain or own.domain.startswith("."):
            raise ConfigError(
                f"own_domains[{i}].domain: expected a domain name, got {own.domain!r}"
            )
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
