"""A burst of calls through one guarded client: more calls at once than redis-py's pool allows
(100 connections in redis-py >= 6, beyond which it refuses) wait for a free slot instead of
failing and opening the breaker while Redis is fine."""

from __future__ import annotations

import asyncio
import time

from test_connection import settings

from mta_sts_policyd.fleet.breaker import BreakerState, CircuitBreaker
from mta_sts_policyd.fleet.connection import MAX_IN_FLIGHT, FleetClient, open_redis
from mta_sts_policyd.fleet.keys import FleetKeys
from support.redis_server import RedisServer


async def test_a_burst_of_calls_waits_for_slots_not_the_breaker(redis_server: RedisServer) -> None:
    # Generous timeouts: 64 connections opened at once on a loaded machine are slow, and
    # this test is about slots, not timeouts (0.3 s to connect failed once under CI load).
    s = settings(redis_server.url, command_timeout=2.0, connect_timeout=2.0)
    client = FleetClient(open_redis(s), FleetKeys("t"), CircuitBreaker(2, 5.0, time.monotonic))

    async def slow_call(n: int) -> int:
        async def op(r: object) -> int:
            await r.blpop(["t:nothing"], timeout=0.01)  # type: ignore[attr-defined]
            return n

        return await client.run(op, "burst")

    results = await asyncio.gather(*(slow_call(n) for n in range(5 * MAX_IN_FLIGHT)))
    assert results == list(range(5 * MAX_IN_FLIGHT))
    assert client.errors == 0 and client.breaker.state is BreakerState.CLOSED
    await client.aclose()
