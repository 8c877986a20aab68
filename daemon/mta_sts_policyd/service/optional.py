"""Optional parts of the running daemon, each started only when configured.

Returns closers so the daemon can stop them in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.postfix.server import SocketmapServer
from mta_sts_policyd.service import composition

log = logging.getLogger(__name__)


async def start(
    config: Config, resolver: PolicyResolver, server: SocketmapServer
) -> list[Callable[[], Any]]:
    closers: list[Callable[[], Any]] = []
    if config.metrics.listen:
        closers.append(composition.start_metrics(config, resolver, server))
    if config.tlsrpt.enabled:
        from mta_sts_policyd.service.reporting import Reporting

        reporting = Reporting(config, resolver)
        await reporting.start()
        closers.append(reporting.close)
        log.info(
            "event=tlsrpt-started socket=%s maillog=%s",
            config.tlsrpt.socket or "-",
            config.maillog.enabled,
        )
    spool = config.reports_in.spool_dir
    if spool and composition.own_report_domains(config):
        closers.append(_watch_spool(config, Path(spool)))
    if config.monitor.in_serve and config.own_domains:
        from mta_sts_policyd.service.own_domains import start_monitor

        closers.append(await start_monitor(config))
        log.info("event=monitor-started domains=%d", len(config.own_domains))
    return closers


def _watch_spool(config: Config, root: Path) -> Callable[[], Any]:
    """Reports the policy host accepted over HTTPS, delivered into the spool (docs/reports-in.md),
    taken into the store every `reports_in.spool_interval` seconds."""
    import asyncio
    import functools

    from mta_sts_policyd.reports_in.intake import Intake
    from mta_sts_policyd.reports_in.spool import watch_spool

    @functools.cache
    def intake() -> Intake:
        return composition.make_reports_intake(config)

    task = asyncio.create_task(watch_spool(root, intake, config.reports_in.spool_interval))
    log.info("event=report-spool-watched spool=%s", root)
    return task.cancel
