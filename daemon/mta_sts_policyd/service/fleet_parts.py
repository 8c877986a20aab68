"""The composition root's part for fleet mode: `[fleet]` becomes the guarded Redis client and
the fleet's collaborators of the policy cache, the refresh and the TLS-RPT sender.

Kept beside composition.py (same rule: the configuration becomes objects here and nowhere
else); redis-py is imported only when fleet mode is on, so a single host never loads it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mta_sts_policyd.config.settings import Config, parse_listen_address
from mta_sts_policyd.errors import ConfigError

if TYPE_CHECKING:
    from mta_sts_policyd.fleet.connection import FleetClient, FleetSettings


def fleet_enabled(config: Config) -> bool:
    return bool(config.fleet.redis or config.fleet.sentinels)


def _password(config: Config) -> str | None:
    path = config.fleet.password_file
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"fleet.password_file: cannot read {path}: {exc.strerror}") from None


def fleet_settings(config: Config) -> FleetSettings:
    from mta_sts_policyd.fleet.connection import FleetSettings

    f = config.fleet
    return FleetSettings(
        redis_url=f.redis,
        sentinels=tuple(
            parse_listen_address(s, f"fleet.sentinels[{i}]") for i, s in enumerate(f.sentinels)
        ),
        service=f.service,
        password=_password(config),
        ca_file=f.ca_file or None,
        key_prefix=f.key_prefix,
        node_name=f.node_name or socket.gethostname(),
        connect_timeout=f.connect_timeout,
        command_timeout=f.command_timeout,
        breaker_failures=f.breaker_failures,
        breaker_reset=f.breaker_reset,
        fetch_lock=f.fetch_lock,
        entry_grace=f.entry_grace,
        revalidate_interval=f.revalidate_interval,
        refresh_lease=f.refresh_lease,
        refresh_batch=f.refresh_batch,
        forget_after=f.forget_after,
        snapshot_interval=f.snapshot_interval,
        report_settle=f.report_settle,
        report_deadline=f.report_deadline,
    )


def make_fleet_client(
    settings: FleetSettings, clock: Callable[[], float] = time.monotonic
) -> FleetClient:
    """The one guarded client of this process, its breaker logged and exported as metrics."""
    from mta_sts_policyd import metrics
    from mta_sts_policyd.fleet.breaker import CircuitBreaker
    from mta_sts_policyd.fleet.connection import FleetClient, log_breaker_change, open_redis
    from mta_sts_policyd.fleet.keys import FleetKeys

    breaker = CircuitBreaker(
        settings.breaker_failures, settings.breaker_reset, clock, log_breaker_change
    )
    client = FleetClient(open_redis(settings), FleetKeys(settings.key_prefix), breaker)
    metrics.FLEET_BREAKER_OPEN.set_function(lambda: float(breaker.is_open))
    metrics.FLEET_REDIS_CALLS.set_function(lambda: client.calls)
    metrics.FLEET_REDIS_ERRORS.set_function(lambda: client.errors)
    metrics.FLEET_REDIS_SKIPPED.set_function(lambda: client.skipped)
    return client
