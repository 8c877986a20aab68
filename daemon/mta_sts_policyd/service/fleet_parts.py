"""The composition root's part for fleet mode: `[fleet]` becomes the guarded Redis client and
the fleet's collaborators of the policy cache, the refresh and the TLS-RPT sender.

Kept beside composition.py (same rule: the configuration becomes objects here and nowhere
else); redis-py is imported only when fleet mode is on, so a single host never loads it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mta_sts_policyd.config.settings import Config, parse_listen_address
from mta_sts_policyd.config.value_checks import node_name_problem
from mta_sts_policyd.errors import ConfigError, FleetUnavailable

if TYPE_CHECKING:
    from mta_sts_policyd.fleet.connection import FleetClient, FleetSettings
    from mta_sts_policyd.fleet.invalidation import Invalidations
    from mta_sts_policyd.fleet.name_claim import NameClaim
    from mta_sts_policyd.fleet.nodes import Heartbeat
    from mta_sts_policyd.fleet.refresh_queue import RefreshQueue
    from mta_sts_policyd.fleet.report_runner import FleetReporting
    from mta_sts_policyd.policy.resolver import PolicyResolver
    from mta_sts_policyd.tlsrpt.context import ReportContext
    from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore

REFRESH_TICK = 60.0
"""Seconds between rounds of the refresh loop (PolicyResolver.run_refresh_loop's default)."""


SNAPSHOT_TIMES: dict[str, float] = {}
"""Day -> when this process last uploaded its TLS-RPT counts of it: filled by the snapshot
uploader (make_fleet_reporting), read by the heartbeat (make_heartbeat), which start apart."""

_NAME_CLAIMS: dict[str, NameClaim] = {}


def process_name_claim() -> NameClaim:
    """This process's claim on its node name: its heartbeat finds a second daemon under the
    same name, its snapshot uploader then holds back (both are built apart)."""
    from mta_sts_policyd.fleet.name_claim import NameClaim

    if "process" not in _NAME_CLAIMS:
        _NAME_CLAIMS["process"] = NameClaim()
    return _NAME_CLAIMS["process"]


def fleet_enabled(config: Config) -> bool:
    return bool(config.fleet.redis or config.fleet.sentinels)


def _password(config: Config) -> str | None:
    path = config.fleet.password_file
    if not path:
        return None
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"fleet.password_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"fleet.password_file: {path} is not UTF-8 text") from None
    if not password:  # redis-py would send no AUTH, and Redis answer with a riddle
        raise ConfigError(
            f"fleet.password_file: {path} is empty (write the Redis password into it, or leave"
            " fleet.password_file empty when Redis needs none or the URL holds it)"
        )
    return password


def node_name(config: Config) -> str:
    """This node's name in the fleet: `[fleet] node_name`, else the host name."""
    return config.fleet.node_name or socket.gethostname()


def _node_name_usable(config: Config) -> None:
    """The host name stands in for an empty node_name: it must be one word too."""
    name = node_name(config)
    if node_name_problem(name) is not None:
        raise ConfigError(
            f"fleet.node_name: empty, and the host name {name!r} is not usable as a node name"
            " (set fleet.node_name to letters, digits, dots, hyphens and underscores)"
        )


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
        node_name=node_name(config),
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
        heartbeat_interval=f.heartbeat_interval,
        report_lease=f.report_lease,
    )


_COUNTED: dict[bool, FleetClient] = {}
"""The process's guarded clients (lookups: True, reports: False), whose calls the Redis call
metrics add up."""


def _count_calls(client: FleetClient, *, lookups: bool) -> None:
    from mta_sts_policyd import metrics

    _COUNTED[lookups] = client
    clients = _COUNTED.values
    metrics.FLEET_REDIS_CALLS.set_function(lambda: sum(c.calls for c in clients()))
    metrics.FLEET_REDIS_ERRORS.set_function(lambda: sum(c.errors for c in clients()))
    metrics.FLEET_REDIS_SKIPPED.set_function(lambda: sum(c.skipped for c in clients()))


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
    _count_calls(client, lookups=True)
    return client


def redis_display_name(settings: FleetSettings) -> str:
    """Where Redis is, for messages: the URL without its password, or the Sentinel set."""
    if settings.sentinels:
        where = ",".join(f"{host}:{port}" for host, port in settings.sentinels)
        return f"sentinel service {settings.service!r} at {where}"
    return _without_password(settings.redis_url)


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if sep and "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{path}"


def make_heartbeat(
    settings: FleetSettings, client: FleetClient, clock: Callable[[], float] = time.time
) -> Heartbeat:
    """This node's heartbeat in Redis (`fleet status`); the daemon runs `run()` as a task and
    calls `farewell()` on a clean stop, before the client closes."""
    from mta_sts_policyd import __version__, metrics
    from mta_sts_policyd.fleet.nodes import Heartbeat, NodeFacts

    facts = NodeFacts(
        queued_writes=lambda: int(metrics.FLEET_QUEUED_WRITES.read()),
        snapshots=lambda: SNAPSHOT_TIMES,
    )
    return Heartbeat(
        client, settings.node_name, __version__, clock, facts, settings.heartbeat_interval,
        claim=process_name_claim(),
    )  # fmt: skip


def check_fleet(config: Config) -> FleetSettings | None:
    """What `check-config` and `serve` check beyond the keys' values: the password file is
    readable and not empty, the CA file exists, the host name can stand in for an empty
    node_name, redis-py is installed. ConfigError names the key of each
    problem, all of them at once (an unreadable password file does not hide a missing CA
    file)."""
    if not fleet_enabled(config):
        return None
    problems: list[str] = []
    checks: list[Callable[[], object]] = [
        lambda: _password(config),
        lambda: _ca_file(config.fleet.ca_file),
        lambda: _node_name_usable(config),
        _redis_py,
    ]
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(*problems)
    return fleet_settings(config)


def _ca_file(path: str) -> None:
    if path and not Path(path).is_file():
        raise ConfigError(f"fleet.ca_file: no such file {path}")


def _redis_py() -> None:
    try:
        import redis
    except ImportError:
        raise ConfigError(
            "fleet: fleet mode needs redis-py (install the package's redis extra:"
            " pip install 'mta-sts-policyd[redis]')"
        ) from None
    found = str(getattr(redis, "__version__", "0"))
    if redis_version_too_old(found):
        raise ConfigError(
            f"fleet: fleet mode needs redis-py {REDIS_PY_MINIMUM} or newer, found {found}"
            " (Debian 12's python3-redis is 4.3.4: pip install 'mta-sts-policyd[redis]')"
        )


REDIS_PY_MINIMUM = "5.0.1"
"""The oldest redis-py the fleet's tests pass with (4.3's asyncio client has no aclose() and
loses the outage tests' reconciliation)."""


def redis_version_too_old(version: str) -> bool:
    """Compare dotted release numbers; anything unreadable counts as too old."""

    def numbers(text: str) -> tuple[int, ...]:
        parts = []
        for piece in text.split(".")[:3]:
            digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
            if not digits:
                break
            parts.append(int(digits))
        return tuple(parts)

    found = numbers(version)
    return not found or found < numbers(REDIS_PY_MINIMUM)


def read_fleet_status(config: Config, now: float | None = None) -> dict[str, Any]:
    """`fleet status`: the fleet as Redis shows it (JSON form, docs/fleet.md). Raises
    errors.FleetUnavailable naming where Redis is and why it failed."""
    from mta_sts_policyd.fleet.breaker import CircuitBreaker
    from mta_sts_policyd.fleet.connection import FleetClient, open_redis
    from mta_sts_policyd.fleet.keys import FleetKeys
    from mta_sts_policyd.fleet.status import collect_status

    settings = fleet_settings(config)
    name = redis_display_name(settings)

    async def go() -> dict[str, Any]:
        breaker = CircuitBreaker(1, 60.0, time.monotonic)
        client = FleetClient(open_redis(settings), FleetKeys(settings.key_prefix), breaker)
        try:
            status = await collect_status(client, name, time.time() if now is None else now)
        except FleetUnavailable as exc:
            raise FleetUnavailable(f"cannot read the fleet from Redis at {name}: {exc}") from None
        finally:
            await client.aclose()
        return status.as_json()

    return asyncio.run(go())


def refresh_slack(settings: FleetSettings) -> float:
    """How late a policy's refresh may be before a node that uses it refreshes it itself: the
    fleet's claim comes within a round of the due time, its refetch within the lease, and the
    shared cache brings the result to every node within a revalidation interval."""
    return REFRESH_TICK + settings.refresh_lease + settings.revalidate_interval


def make_refresh_queue(settings: FleetSettings, client: FleetClient) -> RefreshQueue:
    from mta_sts_policyd.fleet.refresh_queue import RefreshQueue

    return RefreshQueue(
        client,
        lease=settings.refresh_lease,
        batch=settings.refresh_batch,
        forget_after=settings.forget_after,
        slack=refresh_slack(settings),
    )


REPORT_COMMAND_TIMEOUT = 10.0
"""Seconds a report call may take: a day's snapshots are larger than a policy entry."""


def make_fleet_reporting(
    settings: FleetSettings, ctx: ReportContext, store: TlsRptStore
) -> FleetReporting:
    """The fleet's report loop (replaces the local ReportSender, which would send twice).

    Its own Redis client and breaker: large snapshot reads get a longer timeout, and a slow
    report call never takes Redis off the answer path of the lookups."""
    from dataclasses import replace

    from mta_sts_policyd import metrics
    from mta_sts_policyd.fleet.breaker import CircuitBreaker
    from mta_sts_policyd.fleet.connection import FleetClient, log_report_breaker_change, open_redis
    from mta_sts_policyd.fleet.keys import FleetKeys
    from mta_sts_policyd.fleet.report_delivery import ReportDelivery
    from mta_sts_policyd.fleet.report_ledger import ReportLedger
    from mta_sts_policyd.fleet.report_runner import FleetReporting
    from mta_sts_policyd.fleet.report_sender import FleetReportSender
    from mta_sts_policyd.fleet.report_upload import SnapshotUploader
    from mta_sts_policyd.tlsrpt.deliver import NetworkTransport

    timeout = max(settings.command_timeout, REPORT_COMMAND_TIMEOUT)
    redis = open_redis(replace(settings, command_timeout=timeout))
    breaker = CircuitBreaker(
        settings.breaker_failures, settings.breaker_reset, time.monotonic, log_report_breaker_change
    )
    keys = FleetKeys(settings.key_prefix)
    client = FleetClient(redis, keys, breaker)
    metrics.FLEET_REPORTS_BREAKER_OPEN.set_function(lambda: float(breaker.is_open))
    _count_calls(client, lookups=False)
    d = ctx.delivery
    keep = (d.catch_up_days + 2) * 86400.0
    ledger = ReportLedger(client, keys, lease_seconds=settings.report_lease, keep_seconds=keep)
    reports = ReportDelivery(
        ledger,
        ctx.report,
        d,
        NetworkTransport(d, ctx.dkim),
        node=settings.node_name,
        txt_lookup=ctx.txt_lookup,
    )
    sender = FleetReportSender(
        reports, settle=settings.report_settle, deadline=settings.report_deadline
    )
    uploader = SnapshotUploader(
        client, keys, store, settings.node_name, deadline=settings.report_deadline,
        keep_seconds=keep, claim=process_name_claim(),
    )  # fmt: skip
    uploader.last_upload = SNAPSHOT_TIMES
    return FleetReporting(
        store, uploader, sender, snapshot_interval=settings.snapshot_interval, client=client
    )


def start_shared_cache(
    config: Config, settings: FleetSettings, client: FleetClient, resolver: PolicyResolver
) -> Invalidations:
    """The shared tier of the policy cache: plugged into the resolver, its metrics bound;
    returns its invalidations, whose two loops the daemon runs (`run`, `run_revalidation`)."""
    from mta_sts_policyd import metrics
    from mta_sts_policyd.fleet.invalidation import Invalidations
    from mta_sts_policyd.fleet.shared_policies import SharedPolicyCache

    shared = SharedPolicyCache(
        client,
        node=settings.node_name,
        fetch_lock=settings.fetch_lock,
        entry_grace=settings.entry_grace,
        negative_limit=config.cache.negative_ttl,
        clock=resolver.clock,
    )
    resolver.attach_shared(shared)
    stats = resolver.stats
    metrics.TIER_HITS.set_function(stats.tier_hits)
    metrics.FLEET_FETCHES.set_function(lambda: stats.fleet)
    metrics.FLEET_LOCK_WAITS.set_function(lambda: stats.fleet.get("lock_waits", 0))
    metrics.FLEET_QUEUED_WRITES.set_function(lambda: float(len(shared.queue)))
    invalidations = Invalidations(
        client, shared, resolver, revalidate_interval=settings.revalidate_interval
    )
    return invalidations
