"""Typed, validated configuration: TOML in, the frozen `Config` (sections.py) out.

The config part's entry point: loading, command-line overrides and `check-config`'s
rendering; it re-exports the sections and what other parts use of the checks. Unknown keys and
bad values are errors that name the key and the expected form (value_checks.py, toml_schema.py);
the checks that need more than one key are in cross_keys.py.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mta_sts_policyd.config.cross_keys import (
    CROSS_KEY_CHECKS,
    REMOTE_METRICS_HINT,
    check_listen_list,
    config_warnings,
    fit_unwritten_cache_sizes,
    without_refused,
)
from mta_sts_policyd.config.sections import (
    DEFAULT_STATE_DIR,
    CacheConfig,
    Config,
    DiscoveryConfig,
    DkimConfig,
    FleetConfig,
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
from mta_sts_policyd.endpoints import parse_listen_address
from mta_sts_policyd.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_STATE_DIR",
    "REMOTE_METRICS_HINT",
    "CacheConfig",
    "Config",
    "DiscoveryConfig",
    "DkimConfig",
    "FleetConfig",
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
    "check_listen_list",
    "config_and_problems",
    "config_as_dict",
    "config_from_mapping",
    "config_warnings",
    "load_config",
    "load_config_and_problems",
    "parse_listen_address",
    "render_toml",
    "with_overrides",
    "without_refused",
]

DEFAULT_CONFIG_PATH = Path("/etc/mta-sts-policyd/config.toml")


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    """The typed configuration, or one ConfigError listing every problem found."""
    config, problems = config_and_problems(data)
    if problems:
        raise ConfigError(*problems)
    return config


def config_and_problems(data: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """The configuration with each bad key at its default, and every problem found: for
    `check-config`, whose later checks (files, this machine) still run on the rest.

    A key the loader refused gets that one problem: the checks across keys saw its default,
    not the file's value, so what they say of it (`own_domains[0].domain: required` for
    `domain = 5`) would describe a value the operator never wrote."""
    problems: list[str] = []
    config: Config = build_dataclass(Config, data, checks=CHECKS, problems=problems)
    config = fit_unwritten_cache_sizes(config, data)
    refused = list(problems)
    for check in CROSS_KEY_CHECKS:
        try:
            check(config)
        except ConfigError as exc:
            problems += without_refused(exc.problems, refused)
    return config, problems


def load_config(path: Path | None) -> Config:
    """Read TOML: a missing default file means defaults; a missing named file is an error."""
    config, problems = load_config_and_problems(path)
    if problems:
        raise ConfigError(*(f"{path or DEFAULT_CONFIG_PATH}: {p}" for p in problems))
    return config


def load_config_and_problems(path: Path | None) -> tuple[Config, list[str]]:
    """`load_config` that returns the problems of the values (by key, as `config_and_problems`
    gives them) beside the configuration with those keys at their defaults; a file that cannot
    be read or is not TOML still raises ConfigError."""
    target = path or DEFAULT_CONFIG_PATH
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        if path is None:
            return Config(), []
        raise ConfigError(f"{target}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{target}: not valid TOML: {exc}") from None
    return config_and_problems(data)


def with_overrides(
    config: Config, *, listen: list[str] | None = None, state_dir: str | None = None
) -> Config:
    """Apply command-line overrides (`--listen`, `--state-dir`)."""
    if listen:
        check_listen_list(listen, "--listen", indexed=False)
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
