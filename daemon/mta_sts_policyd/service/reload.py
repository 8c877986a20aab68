"""What a SIGHUP can change in the running daemon, and what needs a restart.

The daemon keeps its cache, listeners and state directory across a reload; the resolver's
settings, discovery (nameservers, HTTPS) and logging are replaced. Any other key that changed
is logged as waiting for a restart, so an operator is never left guessing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from mta_sts_policyd.config.settings import Config

RELOADABLE = {
    "logging": None,
    "discovery": None,
    "cache": ("txt_recheck", "cold_wait", "negative_ttl", "failure_backoff", "refresh",
              "refresh_interval", "refresh_jitter", "refresh_concurrency"),
    "server": ("sts_attributes", "dane", "exact_wildcards", "postconf"),
}  # fmt: skip
"""Sections (None: all of it) and keys a SIGHUP applies; everything else needs a restart."""


def restart_only_changes(
    old: Config, new: Config, applies: Mapping[str, tuple[str, ...] | None] = RELOADABLE
) -> list[str]:
    """Dotted keys that differ between two configs but only take effect on restart (`applies`:
    what a SIGHUP takes in, as RELOADABLE says it for the daemon)."""
    changed: list[str] = []
    for section in dataclasses.fields(old):
        before, after = getattr(old, section.name), getattr(new, section.name)
        reloadable = applies.get(section.name, ())
        if before == after or (section.name in applies and reloadable is None):
            continue
        for key in dataclasses.fields(before):
            if key.name not in (reloadable or ()) and (
                getattr(before, key.name) != getattr(after, key.name)
            ):
                changed.append(f"{section.name}.{key.name}")
    return changed


def log_reload_failed(log: logging.Logger, exc: Exception) -> None:
    """The file no longer loads: the running configuration stays (the daemon's and the
    host's SIGHUP say it alike)."""
    log.error("event=reload-failed reason=%r kept=running-configuration", str(exc))


def log_restart_only(log: logging.Logger, keys: list[str]) -> None:
    """The changed keys a SIGHUP did not take in, if any."""
    if keys:
        log.warning(
            "event=reload-needs-restart keys=%s reason='these take effect on restart'",
            ",".join(keys),
        )
