"""The one way this daemon talks to Redis: a redis-py asyncio client behind a circuit breaker.

Why a wrapper: every fleet call must be cheap to give up. Timeouts are the client's own
(`socket_timeout`, `socket_connect_timeout`), never `asyncio.wait_for` around a call, which has
lost replies meant for other callers of a shared connection in redis-py's past; retries are
off (a retry multiplies the wait while Redis is down). Each outcome feeds the breaker, and a
call while it is open raises `FleetUnavailable` without touching the network.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.fleet.breaker import BreakerState, CircuitBreaker
from mta_sts_policyd.fleet.keys import FleetKeys

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_IN_FLIGHT = 64
"""Redis calls of one process under way at once; more wait for a free slot. redis-py >= 6
refuses a call beyond its pool's 100 connections at once (MaxConnectionsError), which a burst
of first lookups reached: the breaker opened without Redis being down at all."""

Redis = Any
"""redis.asyncio.Redis (redis-py ships no type information mypy --strict can use)."""


@dataclass(frozen=True)
class FleetSettings:
    """The fleet's settings as plain values (the composition root copies them from `[fleet]`)."""

    redis_url: str
    sentinels: tuple[tuple[str, int], ...]
    service: str
    password: str | None
    ca_file: str | None
    key_prefix: str
    node_name: str
    connect_timeout: float
    command_timeout: float
    breaker_failures: int
    breaker_reset: float
    fetch_lock: float
    entry_grace: float
    revalidate_interval: float
    refresh_lease: float
    refresh_batch: int
    forget_after: float
    snapshot_interval: float
    report_settle: float
    report_deadline: float
    heartbeat_interval: float = 15.0
    report_lease: float = 180.0


def _client_options(settings: FleetSettings) -> dict[str, Any]:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "socket_timeout": settings.command_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if settings.password is not None:
        options["password"] = settings.password
    return options


def open_redis(settings: FleetSettings) -> Redis:
    """A client for the configured Redis or Sentinel-managed master. No I/O here: the first
    call connects (so a daemon starts whether or not Redis is up)."""
    options = _client_options(settings)
    if settings.sentinels:
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.sentinels),
            sentinel_kwargs={
                "socket_timeout": settings.command_timeout,
                "socket_connect_timeout": settings.connect_timeout,
            },
            **options,
        )
        return sentinel.master_for(settings.service, **options)
    import redis.asyncio

    if settings.redis_url.startswith("rediss://") and settings.ca_file:
        options["ssl_ca_certs"] = settings.ca_file
    return redis.asyncio.from_url(settings.redis_url, **options)


def describe(exc: BaseException) -> str:
    """The error's class and message (redis-py 6+ reprs drop the message: "network:..."),
    without the client objects some messages embed (a Sentinel's "No master found" holds
    the whole connection pool's repr, 1.5 KB naming no more than the address already does)."""
    text = _without_object_reprs(str(exc))
    hint = next((h for marks, h in _AUTH_HINTS if any(m in text for m in marks)), "")
    return f"{type(exc).__name__}: {text}{hint}" if text else type(exc).__name__


_AUTH_HINTS = (
    (("HELLO must be called", "NOAUTH"), " (Redis wants a password: set fleet.password_file)"),
    (
        ("WRONGPASS", "invalid username-password pair", "invalid password"),
        " (Redis refused the password of fleet.password_file or the URL)",
    ),
)
"""What Redis's own words about authentication mean for the configuration."""


def _without_object_reprs(text: str) -> str:
    """`<package.Class(...)>` and `<package.Class object at 0x...>`, nested or not, as `…`."""
    out, i = [], 0
    while (start := text.find("<", i)) >= 0:
        match = _REPR_START.match(text, start)
        if match is None:
            out.append(text[i : start + 1])
            i = start + 1
            continue
        depth, end = 0, start
        while end < len(text):
            depth += {"<": 1, ">": -1}.get(text[end], 0)
            end += 1
            if depth == 0:
                break
        out.append(text[i:start] + "…")
        i = end
    return "".join(out) + text[i:]


_REPR_START = re.compile(r"<[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+[( ]")


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a failed call raises: redis-py's errors (its timeouts and connection errors are
    among them), and the OS and asyncio errors some paths let through."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


class FleetClient:
    """Guarded calls: `await client.run(lambda r: r.get(key), "read policy")`."""

    def __init__(self, redis: Redis, keys: FleetKeys, breaker: CircuitBreaker) -> None:
        self.redis = redis
        self.keys = keys
        self.breaker = breaker
        self.calls = 0
        """Calls that went to Redis (none while the breaker is open)."""
        self.errors = 0
        self.skipped = 0
        """Calls refused without a network round trip because the breaker was open."""
        self._errors = redis_errors()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def run(self, op: Callable[[Redis], Awaitable[T]], what: str) -> T:
        if not self.breaker.allow():
            self.skipped += 1
            raise FleetUnavailable(f"{what}: Redis is off the answer path (breaker open)")
        was_down = self.breaker.state is not BreakerState.CLOSED
        try:
            async with self._slots:
                if self.breaker.state is BreakerState.OPEN:  # opened while this call waited
                    self.skipped += 1
                    raise FleetUnavailable(f"{what}: Redis is off the answer path (breaker open)")
                self.calls += 1
                result = await op(self.redis)
        except self._errors as exc:
            self.errors += 1
            reason = f"{what}: {describe(exc)}"
            self.breaker.failed(reason)
            if isinstance(exc, ConnectionError | OSError) or "Connection" in type(exc).__name__:
                await self._drop_idle_connections()
            raise FleetUnavailable(reason) from exc
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        if was_down:
            await self._drop_idle_connections()
        return result

    async def _drop_idle_connections(self) -> None:
        """Close the pool's idle connections: after a connection error or when Redis is back,
        they are likely dead (a restarted server reset them), and with no retries each would
        fail one call, the first lookup to use it fetching on its own."""
        pool = getattr(self.redis, "connection_pool", None)
        if pool is None:
            return
        try:
            await pool.disconnect(inuse_connections=False)
        except self._errors as exc:
            log.debug("event=fleet-pool-reset-failed reason=%r", describe(exc))

    @property
    def available(self) -> bool:
        """Closed breaker: worth trying (no call made)."""
        return self.breaker.state is BreakerState.CLOSED

    async def aclose(self) -> None:
        close = getattr(self.redis, "aclose", None) or self.redis.close  # redis-py < 5.0.1
        try:
            await close()
        except self._errors as exc:
            log.info("event=fleet-close-failed reason=%r", str(exc))


def log_breaker_change(before: BreakerState, after: BreakerState, reason: str) -> None:
    """Once per change: opening is a warning (the fleet is degraded), closing information; the
    trial calls while Redis stays down (open -> half-open -> open, every breaker_reset) are
    debug, so an hour-long outage is two lines at the default level, not hundreds."""
    _log_change("", before, after, reason)


def log_report_breaker_change(before: BreakerState, after: BreakerState, reason: str) -> None:
    """The same for the fleet reports' own client (`part=reports`: lookups are unaffected)."""
    _log_change("part=reports ", before, after, reason)


def _log_change(part: str, before: BreakerState, after: BreakerState, reason: str) -> None:
    if before is BreakerState.CLOSED or after is BreakerState.CLOSED:
        level = logging.WARNING if after is BreakerState.OPEN else logging.INFO
    else:
        level = logging.DEBUG
    log.log(level, "event=fleet-breaker-changed %sfrom=%s to=%s reason=%r", part, before.value,
            after.value, reason)  # fmt: skip
