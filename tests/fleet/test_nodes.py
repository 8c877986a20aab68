"""Heartbeats in Redis (fleet/nodes.py): written through the guarded client, validated when
read back, skipped (not retried, not on the answer path) while Redis is away, and pruned."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from test_connection import settings

from mta_sts_policyd.fleet.breaker import CircuitBreaker
from mta_sts_policyd.fleet.connection import FleetClient, open_redis
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.nodes import (
    Heartbeat,
    NodeFacts,
    NodeRecord,
    node_condition,
    parse_record,
    read_nodes,
)
from support.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def client_for(url: str) -> FleetClient:
    s = settings(url)
    return FleetClient(open_redis(s), FleetKeys("t"), CircuitBreaker(2, 0.5, time.monotonic))


def test_a_record_survives_its_json_form() -> None:
    rec = NodeRecord("mx1", "1.0", 10.0, 20.0, interval=2.0, breaker="open", queued_writes=3,
                     refresh_due=7, redis_errors=2, snapshots={"2026-12-01": 15.0})  # fmt: skip
    assert parse_record("mx1", rec.to_json()) == rec


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b"{}",  # no "seen"
        b'{"seen": "yesterday"}',
        b'{"seen": 1, "queued_writes": -1}',
        b'{"seen": 1, "queued_writes": true}',
        b'{"seen": 1e999}',
        b'{"seen": 1, "version": "1\\n2"}',
        b'{"seen": 1, "snapshots": {"monday": 1}}',
        b'{"seen": 1, "snapshots": [1]}',
        b"not json",
        b'{"seen": 1, "version": "' + b"x" * 70_000 + b'"}',
    ],
)
def test_malformed_records_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_record("mx1", raw)


def test_condition_up_gone_stopped() -> None:
    rec = NodeRecord("mx1", "1.0", 0.0, 1000.0)
    assert node_condition(rec, 1060.0) == "up"
    assert node_condition(rec, 1061.0) == "gone"  # four 15 s heartbeats missed
    fast = NodeRecord("mx1", "1.0", 0.0, 1000.0, interval=1.0)
    assert node_condition(fast, 1005.0) == "gone"
    stopped = NodeRecord("mx1", "1.0", 0.0, 1000.0, state="stopped")
    assert node_condition(stopped, 1_000_000.0) == "stopped"


async def test_heartbeat_writes_reads_and_says_goodbye(redis_server: RedisServer) -> None:
    client, clock = client_for(redis_server.url), Clock()
    await client.run(lambda r: r.zadd("t:v1:refresh:due", {"a.test": 1, "b.test": 2}), "seed")
    facts = NodeFacts(queued_writes=lambda: 4, snapshots=lambda: {"2026-12-01": clock.now})
    beat = Heartbeat(client, "mx1", "9.9", clock, facts)
    assert await beat.beat()
    records = await read_nodes(client)
    rec = records["mx1"]
    assert rec is not None
    assert (rec.version, rec.seen, rec.breaker, rec.queued_writes, rec.refresh_due) == (
        "9.9", clock.now, "closed", 4, 2,
    )  # fmt: skip
    assert rec.snapshots == {"2026-12-01": clock.now}
    await beat.farewell()
    rec = (await read_nodes(client))["mx1"]
    assert rec is not None and rec.state == "stopped"
    await client.aclose()


async def test_an_unreadable_record_is_shown_as_none_and_logged_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(redis_server.url)
    await client.run(lambda r: r.hset("t:v1:nodes", "evil", b'{"seen": "x"}'), "seed")
    assert await read_nodes(client, log_invalid=False) == {"evil": None}
    assert "fleet-node-record-invalid" not in caplog.text
    assert await read_nodes(client) == {"evil": None}
    assert await read_nodes(client) == {"evil": None}
    assert caplog.text.count("event=fleet-node-record-invalid node='evil'") == 1
    await client.aclose()


async def test_a_dead_redis_skips_beats_without_calls(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mta_sts_policyd.fleet.nodes")
    client = client_for(redis_server.url)
    beat = Heartbeat(client, "mx1", "9.9", Clock())
    redis_server.kill()
    assert not await beat.beat()
    assert not await beat.beat()  # the breaker opens after two failures
    calls = client.calls
    assert not await beat.beat()
    assert client.calls == calls  # no call while the breaker is open
    assert caplog.text.count("event=fleet-heartbeat-skipped") == 1  # logged once
    await client.aclose()


async def test_prune_forgets_long_gone_and_unreadable_nodes(redis_server: RedisServer) -> None:
    client, clock = client_for(redis_server.url), Clock()
    old = NodeRecord("old", "1", 0.0, clock.now - 8 * 86400).to_json()
    await client.run(lambda r: r.hset("t:v1:nodes", mapping={"old": old, "bad": "{"}), "seed")
    beat = Heartbeat(client, "mx1", "9.9", clock)
    await beat.beat()
    assert sorted(await beat.prune()) == ["bad", "old"]
    assert list(await read_nodes(client)) == ["mx1"]
    raw = await client.run(lambda r: r.hget("t:v1:nodes", "mx1"), "read")
    assert json.loads(raw)["name"] == "mx1"
    await client.aclose()


async def test_an_outage_is_two_log_lines_at_info(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Down, trial calls failing for a while, back: one warning and one info line."""
    from mta_sts_policyd.fleet.connection import log_breaker_change

    caplog.set_level(logging.INFO, logger="mta_sts_policyd.fleet.connection")
    s = settings(redis_server.url)
    breaker = CircuitBreaker(1, 0.05, time.monotonic, log_breaker_change)
    client = FleetClient(open_redis(s), FleetKeys("t"), breaker)
    beat = Heartbeat(client, "mx1", "9.9", Clock())
    redis_server.kill()
    for _ in range(4):
        await beat.beat()
        await asyncio.sleep(0.06)  # each time a failing trial call
    redis_server.start()
    await asyncio.sleep(0.06)
    assert await beat.beat()
    lines = [r.getMessage() for r in caplog.records if "fleet-breaker-changed" in r.getMessage()]
    assert [line.split(" reason")[0] for line in lines] == [
        "event=fleet-breaker-changed from=closed to=open",
        "event=fleet-breaker-changed from=half-open to=closed",
    ]
    await client.aclose()


def test_the_reports_breaker_says_so_and_its_calls_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The reports' own client: its breaker lines name the part, its calls add to the metric."""
    from mta_sts_policyd import metrics
    from mta_sts_policyd.fleet.breaker import BreakerState
    from mta_sts_policyd.fleet.connection import log_report_breaker_change
    from mta_sts_policyd.service import fleet_parts

    caplog.set_level(logging.INFO, logger="mta_sts_policyd.fleet.connection")
    log_report_breaker_change(BreakerState.CLOSED, BreakerState.OPEN, "timeout")
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith("event=fleet-breaker-changed part=reports from=closed to=open")
    )
    lookups = FleetClient(None, FleetKeys("t"), CircuitBreaker(1, 1.0, time.monotonic))
    reports = FleetClient(None, FleetKeys("t"), CircuitBreaker(1, 1.0, time.monotonic))
    lookups.calls, reports.calls, reports.errors = 5, 3, 2
    saved = dict(fleet_parts._COUNTED)
    try:
        fleet_parts._count_calls(lookups, lookups=True)
        fleet_parts._count_calls(reports, lookups=False)
        assert metrics.FLEET_REDIS_CALLS.read() == 8
        assert metrics.FLEET_REDIS_ERRORS.read() == 2
    finally:
        fleet_parts._COUNTED.clear()
        fleet_parts._COUNTED.update(saved)
