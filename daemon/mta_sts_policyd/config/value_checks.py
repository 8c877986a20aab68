"""Range and form checks of single config values, by dotted key.

Each check returns None when the value is fine, else what was expected; toml_schema.py puts
the key and the value in front of it. Checks that need two keys are in settings.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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


CHECKS: dict[str, Callable[[Any], str | None]] = {
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
    "monitor.interval": _positive,
    "monitor.jitter": _non_negative,
    "reports_in.retention_days": _positive,
    "reports_in.quarantine_keep": _positive,
    "reports_in.min_days": _positive,
    "reports_in.min_organizations": _positive,
}
