"""Optional parts of the running daemon, each started only when configured.

Returns closers so the daemon can stop them in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mta_sts_policyd.config.settings import Config, parse_listen_address
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.policy.stats import LATENCY_BUCKETS
from mta_sts_policyd.postfix.server import SocketmapServer

log = logging.getLogger(__name__)


async def start(
    config: Config, resolver: PolicyResolver, server: SocketmapServer
) -> list[Callable[[], Any]]:
    closers: list[Callable[[], Any]] = []
    if config.metrics.listen:
        closers.append(start_metrics(config, resolver))
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
    return closers


def start_metrics(config: Config, resolver: PolicyResolver) -> Callable[[], Any]:
    from mta_sts_policyd import metrics

    metrics.bind_lookup_stats(resolver.stats, LATENCY_BUCKETS)
    metrics.CACHE_ENTRIES.set_function(lambda: float(len(resolver.cache)))
    host, port = parse_listen_address(config.metrics.listen, "metrics.listen")
    exposition = metrics.start_metrics_server(host, port)
    log.info("event=metrics-listening address=%s:%d", exposition.host, exposition.port)
    return exposition.close
