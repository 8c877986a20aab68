"""Optional parts of the running daemon, each started only when configured.

Returns closers so the daemon can stop them in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
    if config.monitor.in_serve and config.own_domains:
        from mta_sts_policyd.service.own_domains import start_monitor

        closers.append(await start_monitor(config))
        log.info("event=monitor-started domains=%d", len(config.own_domains))
    return closers
