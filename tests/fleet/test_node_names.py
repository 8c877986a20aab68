"""One node name, one daemon (fleet/name_claim.py): two daemons given the same `[fleet]
node_name` are found out by their heartbeats (an error at every beat, `fleet status` shows it),
and neither uploads TLS-RPT counts under the shared name, so neither replaces the other's; once
each has its own name every count reaches the fleet. Against a real redis-server."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from mta_sts_policyd.fleet.breaker import CircuitBreaker
from mta_sts_policyd.fleet.connection import FleetClient, open_redis
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.nodes import Heartbeat, read_nodes
from mta_sts_policyd.fleet.report_snapshot import decode_snapshot
from mta_sts_policyd.fleet.report_upload import SnapshotUploader
from mta_sts_policyd.fleet.status import collect_status
from mta_sts_policyd.tlsrpt.model import SessionEvent
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore, utc_day
from support.fleet_reports import Clock, fleet_settings
from support.redis_server import RedisServer
from support.tlsrpt_validate import DAY_TS, STS

START = DAY_TS + 3600.0
RECORD = "v=TLSRPTv1;rua=mailto:tlsrpt@mail.example"


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


def client_for(url: str) -> FleetClient:
    return FleetClient(
        open_redis(fleet_settings(url)), FleetKeys("t"), CircuitBreaker(2, 0.5, time.monotonic)
    )


def store_with(path: Path, sessions: int) -> TlsRptStore:
    store = TlsRptStore(path, flush_interval=3600)
    store.submit(SessionEvent(START, "mail.example", STS, True, (), RECORD, count=sessions))
    return store


def uploader(
    client: FleetClient, store: TlsRptStore, name: str, beat: Heartbeat
) -> SnapshotUploader:
    return SnapshotUploader(
        client, client.keys, store, name, deadline=6 * 3600.0, keep_seconds=86400.0,
        clock=beat.clock, claim=beat.claim,
    )  # fmt: skip


async def uploaded(client: FleetClient) -> dict[str, int]:
    """Node name -> sessions in its snapshot of the day in Redis."""
    day = utc_day(START)
    key = client.keys.snapshot(day.isoformat())
    raw = await client.run(lambda r: r.hgetall(key), "read snapshots")
    return {
        name.decode(): decode_snapshot(body, node=name.decode(), day=day).sessions
        for name, body in raw.items()
    }


async def test_two_daemons_under_one_name_are_found_and_neither_overwrites_the_others_counts(
    redis_server: RedisServer, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mta_sts_policyd.fleet.report_upload")
    first, second = client_for(redis_server.url), client_for(redis_server.url)
    a = Heartbeat(first, "mx2", "9.9", clock, interval=15.0)
    clock.now += 1
    b = Heartbeat(second, "mx2", "9.9", clock, interval=15.0)  # the same name, by mistake
    up_a = uploader(first, store_with(tmp_path / "a.db", 5), "mx2", a)
    up_b = uploader(second, store_with(tmp_path / "b.db", 7), "mx2", b)
    for _ in range(3):
        assert await a.beat() and await b.beat()
        assert await up_a.tick() == 0 and await up_b.tick() == 0
        clock.now += 15
    assert a.claim.in_conflict(clock()) and b.claim.in_conflict(clock())
    assert a.claim.other == b.claim.instance and b.claim.other == a.claim.instance
    assert caplog.text.count("event=fleet-node-name-conflict node=mx2") >= 3  # at every beat
    assert "event=fleet-snapshots-held node=mx2" in caplog.text
    assert await uploaded(first) == {}  # neither replaced the other's counts
    status = (await collect_status(first, "redis", clock())).as_json()
    assert [(n["name"], n["name_conflict"]) for n in status["nodes"]] == [("mx2", True)]

    # b is renamed (its old process stops cleanly, the new one runs as mx4): every count is in.
    await b.farewell()
    b4 = Heartbeat(second, "mx4", "9.9", clock, interval=15.0)
    up_b4 = uploader(second, up_b.store, "mx4", b4)
    for _ in range(6):
        clock.now += 15
        assert await a.beat() and await b4.beat()
        await up_a.tick()
        await up_b4.tick()
    assert not a.claim.in_conflict(clock())
    assert await uploaded(first) == {"mx2": 5, "mx4": 7}
    status = (await collect_status(first, "redis", clock())).as_json()
    assert {n["name"]: n["name_conflict"] for n in status["nodes"]} == {"mx2": False, "mx4": False}
    assert "event=fleet-snapshots-resumed node=mx2" in caplog.text
    for store in (up_a.store, up_b.store):
        store.close()
    await first.aclose()
    await second.aclose()


async def test_a_restart_or_a_clean_stop_is_no_conflict(
    redis_server: RedisServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(redis_server.url)
    crashed = Heartbeat(client, "mx1", "9.9", clock, interval=15.0)
    assert await crashed.beat()  # then killed: no farewell, its record stays "running"
    clock.now += 5
    again = Heartbeat(client, "mx1", "9.9", clock, interval=15.0)
    assert await again.beat()
    clock.now += 15
    assert await again.beat()  # reads its own record back: the name is confirmed
    assert again.claim.confirmed and not again.claim.in_conflict(clock())
    await again.farewell()
    clock.now += 1
    after = Heartbeat(client, "mx1", "9.9", clock, interval=15.0)
    assert await after.beat() and not after.claim.in_conflict(clock())
    assert "fleet-node-name-conflict" not in caplog.text
    rec = (await read_nodes(client))["mx1"]
    assert rec is not None and rec.instance == after.claim.instance and rec.conflict_at == 0.0
    raw = await client.run(lambda r: r.hget("t:v1:nodes", "mx1"), "read")
    assert json.loads(raw)["instance"] == after.claim.instance
    await client.aclose()
