"""Fleet refresh nodes in one process: a guarded client per node on one real redis-server, the
shared refresh queue, and resolvers on the loopback STS world with one injected clock."""

from __future__ import annotations

import time

from mta_sts_policyd.fleet.breaker import CircuitBreaker
from mta_sts_policyd.fleet.connection import FleetClient, FleetSettings, open_redis
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.refresh_queue import RefreshQueue

DAY = 86400.0
LONG_POLICY = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 2592000\n"
"""30 days: the refresh interval (a day plus jitter) decides, not 3/4 of max_age."""


def fleet_settings(url: str, **changes: object) -> FleetSettings:
    values: dict[str, object] = dict(
        redis_url=url, sentinels=(), service="", password=None, ca_file=None,
        key_prefix="t", node_name="n1", connect_timeout=0.3, command_timeout=0.3,
        breaker_failures=2, breaker_reset=0.3, fetch_lock=5.0, entry_grace=60.0,
        revalidate_interval=60.0, refresh_lease=600.0, refresh_batch=10,
        forget_after=30 * DAY, snapshot_interval=60.0, report_settle=0.0, report_deadline=0.0,
    )  # fmt: skip
    values.update(changes)
    return FleetSettings(**values)  # type: ignore[arg-type]


def fleet_client(url: str, *, failures: int = 2, reset: float = 0.3) -> FleetClient:
    s = fleet_settings(url)
    breaker = CircuitBreaker(failures, reset, time.monotonic)
    return FleetClient(open_redis(s), FleetKeys(s.key_prefix), breaker)


def refresh_queue(
    client: FleetClient,
    *,
    lease: float = 600.0,
    batch: int = 10,
    forget_after: float = 30 * DAY,
    slack: float = 30 * DAY,
) -> RefreshQueue:
    """A queue whose safety net (`slack`) stays out of the way unless a test sets it."""
    return RefreshQueue(client, lease=lease, batch=batch, forget_after=forget_after, slack=slack)
