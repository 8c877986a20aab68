"""Range and form checks of single config values, by dotted key.

Each check returns None when the value is fine, else what was expected; toml_schema.py puts
the key and the value in front of it. Checks that need two keys are in cross_keys.py.

Why bounds and not just types: TOML reads `inf` and `nan` as numbers and integers of any size,
and each passes a type check but breaks the daemon (`flush_interval = inf` never writes the
cache, `max_entries = 1e20`-sized counts crash `serve`, `state_dir = ""` is the working
directory). Every int and float key has an entry in RANGES (tests/config checks that none is
missing); the bounds are generous and only shut out values no operator can mean.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DAY = 86400.0
YEAR = 31557600.0
"""RFC 8461 §3.2: a policy's max_age is at most 31557600 seconds."""


@dataclass(frozen=True, slots=True)
class Range:
    """Finite numbers from `low` (excluded when `low_open`) to `high` (included)."""

    low: float
    high: float
    low_open: bool = False
    unit: str = "a number"

    def problem(self, value: float) -> str | None:
        """None when `value` is allowed, else the allowed range in words."""
        above = value > self.low if self.low_open else value >= self.low
        if math.isfinite(value) and above and value <= self.high:
            return None
        return self.describe()

    def describe(self) -> str:
        """E.g. "a number of seconds from 0 to 60", "... greater than 0 and at most 3600"."""
        low, high = _show(self.low), _show(self.high)
        if self.low_open:
            return f"{self.unit} greater than {low} and at most {high}"
        return f"{self.unit} from {low} to {high}"


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _seconds(high: float, *, zero: bool = False, low: float = 0.0) -> Range:
    """`low`: the shortest period that does not hammer a peer (Redis, a policy host, the disk)
    or keep the loop from ever going idle (`heartbeat_interval = 0.0001` was 8,000 Redis
    commands a second and a daemon that did not stop on SIGTERM)."""
    if low:
        return Range(low, high, unit="a number of seconds")
    return Range(0, high, low_open=not zero, unit="a number of seconds")


def _count(high: int, low: int = 1) -> Range:
    return Range(low, high, unit="a whole number")


PORT = _count(65535)

RANGES: dict[str, Range] = {
    "server.max_connections": _count(1_000_000),
    "server.idle_timeout": _seconds(DAY),
    "discovery.dns_timeout": _seconds(60),
    "discovery.fetch_timeout": Range(0, 60, True, "a number of seconds (RFC 8461 §3.3)"),
    "discovery.https_port": PORT,
    "cache.txt_recheck": _seconds(DAY, low=1),
    "cache.cold_wait": _seconds(60, zero=True),
    "cache.negative_ttl": _seconds(7 * DAY, zero=True),
    "cache.failure_backoff": _seconds(DAY, zero=True),
    "cache.refresh_interval": _seconds(YEAR, low=30),
    "cache.refresh_jitter": _seconds(DAY, zero=True),
    "cache.refresh_concurrency": _count(1000),
    "cache.memory_entries": _count(10_000_000),
    "cache.max_entries": _count(100_000_000),
    "cache.flush_interval": _seconds(3600, low=0.1),
    "tlsrpt.retention_days": _count(3660),
    "tlsrpt.max_report_bytes": _count(1 << 30),
    "tlsrpt.send_delay_max": _seconds(DAY, zero=True),
    "tlsrpt.retry_window": _seconds(7 * DAY),
    "tlsrpt.https_timeout": _seconds(600),
    "probe.reprobe_interval": _seconds(7 * DAY),
    "probe.timeout": _seconds(600),
    "probe.concurrency": _count(1000),
    "probe.port": PORT,
    "host.poll_interval": _seconds(DAY, low=0.1),
    "host.reports_max_bytes": _count(64 * 1024 * 1024),
    "host.status_interval": _seconds(7 * DAY),
    "monitor.interval": _seconds(7 * DAY),
    "monitor.jitter": _seconds(DAY, zero=True),
    "reports_in.retention_days": _count(3660),
    "reports_in.quarantine_keep": _count(1_000_000),
    "reports_in.min_days": _count(366),
    "reports_in.min_organizations": _count(10_000),
    "reports_in.spool_interval": _seconds(DAY, low=0.1),
    "maillog.silence_alert": _seconds(30 * DAY, zero=True),
    "fleet.heartbeat_interval": _seconds(3600, low=1),
    "fleet.connect_timeout": _seconds(60),
    "fleet.command_timeout": _seconds(60),
    "fleet.breaker_failures": _count(1000),
    "fleet.breaker_reset": _seconds(DAY, low=0.1),
    "fleet.fetch_lock": _seconds(3600, low=1),
    "fleet.entry_grace": _seconds(YEAR, zero=True),
    "fleet.revalidate_interval": _seconds(DAY, low=1),
    "fleet.refresh_lease": _seconds(DAY, low=1),
    "fleet.refresh_batch": _count(10_000),
    "fleet.forget_after": _seconds(10 * YEAR),
    "fleet.snapshot_interval": _seconds(DAY, low=1),
    "fleet.report_settle": _seconds(DAY, zero=True),
    "fleet.report_deadline": _seconds(7 * DAY, zero=True),
    "fleet.report_lease": _seconds(DAY, low=1),
}


def state_dir_problem(value: str) -> str | None:
    """An empty or relative path would put the state in whatever the working directory happens
    to be (`/` under systemd)."""
    if not value.strip():
        return "a directory path (not empty)"
    return None if value.startswith("/") else "an absolute directory path"


def _absolute_path(value: str) -> str | None:
    """A socket path relative to the working directory lands wherever the daemon started."""
    return None if not value or value.startswith("/") else "an absolute path (or empty: off)"


def _octal_mode(value: str) -> str | None:
    try:
        ok = 0 <= int(value, 8) <= 0o777
    except ValueError:
        ok = False
    return None if ok else 'an octal file mode such as "0660"'


_EHLO_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Za-z:.]+\]")


def _ehlo_name(value: str) -> str | None:
    """RFC 5321 §4.1.1.1: a domain or an address literal. A space would split the EHLO line
    into a name and junk the server may refuse the session for."""
    if not value or _EHLO_NAME.fullmatch(value):
        return None
    return "a host name such as mx.example.net or an address literal such as [192.0.2.1]"


_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def node_name_problem(value: str) -> str | None:
    """A fleet node's name is a Redis hash field, a `fleet status` column and a log field: a
    host name's characters keep it one word (a space or a line break would split the table)."""
    if not value or _NODE_NAME.fullmatch(value):
        return None
    return (
        "a name of letters, digits, dots, hyphens and underscores, starting with a letter or"
        " digit, at most 253 characters (empty: the host name)"
    )


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "probe.ehlo_name": _ehlo_name,
    "server.unix_mode": _octal_mode,
    "tlsrpt.socket_mode": _octal_mode,
    "cache.state_dir": state_dir_problem,
    "host.state_dir": state_dir_problem,
    "host.policy_dir": state_dir_problem,
    "tlsrpt.socket": _absolute_path,
    "fleet.node_name": node_name_problem,
    **{key: bounds.problem for key, bounds in RANGES.items()},
}
