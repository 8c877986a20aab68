"""The guarded Redis client against a real redis-server: timeouts are the client's own, a dead
or frozen server opens the breaker, and no call reaches Redis while it is open."""

from __future__ import annotations

import asyncio
import time

import pytest

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.fleet.breaker import BreakerState, CircuitBreaker
from mta_sts_policyd.fleet.connection import FleetClient, FleetSettings, open_redis
from mta_sts_policyd.fleet.keys import FleetKeys
from support.redis_server import RedisServer


def settings(url: str, **changes: object) -> FleetSettings:
    values: dict[str, object] = dict(
        redis_url=url, sentinels=(), service="", password=None, ca_file=None,
        key_prefix="t", node_name="n1", connect_timeout=0.3, command_timeout=0.2,
        breaker_failures=2, breaker_reset=0.5, fetch_lock=5.0, entry_grace=60.0,
        revalidate_interval=60.0, refresh_lease=60.0, refresh_batch=10, forget_after=3600.0,
        snapshot_interval=60.0, report_settle=0.0, report_deadline=0.0,
    )  # fmt: skip
    values.update(changes)
    return FleetSettings(**values)  # type: ignore[arg-type]


def client_for(s: FleetSettings) -> FleetClient:
    return FleetClient(
        open_redis(s), FleetKeys(s.key_prefix), CircuitBreaker(2, 0.5, time.monotonic)
    )


async def test_calls_go_through_over_tcp_and_unix(redis_server: RedisServer) -> None:
    for url in (redis_server.url, redis_server.unix_url):
        client = client_for(settings(url))
        await client.run(lambda r: r.set("t:k", b"v"), "write")
        assert await client.run(lambda r: r.get("t:k"), "read") == b"v"
        assert client.calls == 2 and client.errors == 0
        await client.aclose()


async def test_a_killed_server_opens_the_breaker_then_no_calls(redis_server: RedisServer) -> None:
    client = client_for(settings(redis_server.url))
    await client.run(lambda r: r.ping(), "ping")
    redis_server.kill()
    for _ in range(2):
        with pytest.raises(FleetUnavailable):
            await client.run(lambda r: r.ping(), "ping")
    assert client.breaker.state is BreakerState.OPEN
    calls = client.calls
    with pytest.raises(FleetUnavailable, match="breaker open"):
        await client.run(lambda r: r.ping(), "ping")
    assert client.calls == calls and client.skipped == 1
    redis_server.start()
    await asyncio.sleep(0.6)  # the reset time: one trial call closes it
    assert await client.run(lambda r: r.ping(), "ping")
    assert client.breaker.state is BreakerState.CLOSED
    await client.aclose()


async def test_a_frozen_server_costs_the_command_timeout_not_more(
    redis_server: RedisServer,
) -> None:
    client = client_for(settings(redis_server.url))
    await client.run(lambda r: r.ping(), "ping")
    redis_server.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(FleetUnavailable):
            await client.run(lambda r: r.get("t:k"), "read")
        assert time.monotonic() - started < 1.5  # 0.2 s timeout, no retries
    finally:
        redis_server.thaw()
    await client.aclose()


@pytest.mark.parametrize(
    ("message", "said"),
    [
        (
            "No master found for 'm' : <redis.asyncio.client.Redis(<redis.asyncio.connection."
            "ConnectionPool(<redis.asyncio.connection.Connection(db=0,username=<REDACTED>,"
            "retry=<redis.asyncio.retry.Retry object at 0x7f670568fb10>,host=127.0.0.1)>)>)>"
            " - network:ConnectionError",
            "No master found for 'm' : … - network:ConnectionError",
        ),
        ("Error 111 connecting to 127.0.0.1:6399. Connect call failed.", None),
        ("value < 3 and > 1", None),  # not a repr: kept
        ("", None),
    ],
)
def test_errors_are_described_without_client_reprs(message: str, said: str | None) -> None:
    from mta_sts_policyd.fleet.connection import describe

    class MasterNotFoundError(Exception):
        pass

    expected = said if said is not None else message
    text = describe(MasterNotFoundError(message))
    assert text == (f"MasterNotFoundError: {expected}" if message else "MasterNotFoundError")
