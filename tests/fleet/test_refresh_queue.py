"""The shared refresh due-queue against a real redis-server: the claim script's edge cases, the
lease, forgetting, GT reports and XX completions, and members that are not domains."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from mta_sts_policyd import metrics
from mta_sts_policyd.fleet.connection import FleetClient
from support.redis_server import RedisServer
from support.refresh_fleet import DAY, fleet_client, refresh_queue

T0 = 1_800_000_000.0


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[FleetClient]:
    c = fleet_client(redis_server.url)
    yield c
    await c.aclose()


async def scores(client: FleetClient, key: str) -> dict[str, float]:
    rows = await client.redis.zrange(key, 0, -1, withscores=True)
    return {name.decode(): score for name, score in rows}


async def test_empty_queue_claims_nothing(client: FleetClient) -> None:
    queue = refresh_queue(client)
    assert await queue.claim(T0) == []
    assert await queue.depth(T0) == (0, 0)


async def test_batch_larger_than_what_is_due(client: FleetClient) -> None:
    queue = refresh_queue(client, batch=10, lease=600)
    used = {f"d{i}.test": T0 for i in range(5)}
    due = {"d0.test": T0 - 5, "d1.test": T0 - 1, "d2.test": T0, "d3.test": T0 + 1,
           "d4.test": T0 + DAY}  # fmt: skip
    await queue.report(used, due)
    assert await queue.depth(T0) == (5, 3)
    before = metrics.FLEET_REFRESH_CLAIMED.read()
    assert await queue.claim(T0) == ["d0.test", "d1.test", "d2.test"]  # most overdue first
    assert metrics.FLEET_REFRESH_CLAIMED.read() == before + 3
    leased = await scores(client, client.keys.refresh_due)
    assert leased == {"d0.test": T0 + 600, "d1.test": T0 + 600, "d2.test": T0 + 600,
                      "d3.test": T0 + 1, "d4.test": T0 + DAY}  # fmt: skip
    assert await queue.claim(T0) == []  # leased: nobody else gets them
    assert await queue.claim(T0 + 1) == ["d3.test"]


async def test_batches_are_disjoint_and_a_lease_runs_out(client: FleetClient) -> None:
    a, b = refresh_queue(client, batch=4), refresh_queue(client, batch=4)
    domains = [f"d{i}.test" for i in range(10)]
    await a.report(dict.fromkeys(domains, T0), dict.fromkeys(domains, T0))
    first, second, third = await a.claim(T0), await b.claim(T0), await a.claim(T0)
    assert (len(first), len(second), len(third)) == (4, 4, 2)
    assert sorted(first + second + third) == sorted(domains)
    await a.done(dict.fromkeys(first + third, T0 + DAY))  # b "crashed" with its four
    assert await a.claim(T0 + 599) == []
    assert sorted(await a.claim(T0 + 600)) == sorted(second)  # the lease ran out


async def test_reports_only_move_due_times_later(client: FleetClient) -> None:
    queue = refresh_queue(client)
    await queue.report({"a.test": T0}, {"a.test": T0 + 100})
    await queue.report({"a.test": T0 - 50}, {"a.test": T0 + 10})  # an older copy, an older use
    assert await scores(client, client.keys.refresh_due) == {"a.test": T0 + 100}
    assert await scores(client, client.keys.refresh_used) == {"a.test": T0}
    assert await queue.claim(T0 + 100) == ["a.test"]
    await queue.report({"a.test": T0 + 100}, {"a.test": T0 + 50})  # stale: the claim stands
    assert await scores(client, client.keys.refresh_due) == {"a.test": T0 + 700}
    await queue.report({"a.test": T0 + 200}, {"a.test": T0 + DAY})  # a fresher fetch elsewhere
    assert await scores(client, client.keys.refresh_due) == {"a.test": T0 + DAY}
    assert await scores(client, client.keys.refresh_used) == {"a.test": T0 + 200}


async def test_done_sets_the_next_due_time_but_never_revives(client: FleetClient) -> None:
    queue = refresh_queue(client, forget_after=DAY)
    await queue.report({"a.test": T0, "b.test": T0 + DAY}, {"a.test": T0, "b.test": T0})
    assert await queue.claim(T0 + DAY + 1) == ["b.test"]  # a.test: unused for a day
    await queue.done({"a.test": T0 + 2 * DAY, "b.test": T0 + 2 * DAY})
    assert await scores(client, client.keys.refresh_due) == {"b.test": T0 + 2 * DAY}
    assert await scores(client, client.keys.refresh_used) == {"b.test": T0 + DAY}


async def test_unused_domains_are_forgotten_when_they_come_due(
    client: FleetClient, caplog: pytest.LogCaptureFixture
) -> None:
    queue = refresh_queue(client, forget_after=10 * DAY, batch=3)
    used = {f"old{i}.test": T0 for i in range(5)} | {"new.test": T0 + 9 * DAY}
    await queue.report(used, dict.fromkeys(used, T0 + DAY))
    await client.redis.zadd(client.keys.refresh_due, {"orphan.test": T0})  # no use recorded
    caplog.set_level(logging.INFO)
    assert await queue.claim(T0 + 10 * DAY + 1) == ["new.test"]
    assert queue.forgotten == 6
    assert "event=fleet-refresh-forgotten domains=6" in caplog.text
    assert await scores(client, client.keys.refresh_used) == {"new.test": T0 + 9 * DAY}
    assert await queue.depth(T0 + 10 * DAY + 1) == (1, 0)


async def test_members_that_are_not_domains_are_dropped(
    client: FleetClient, caplog: pytest.LogCaptureFixture
) -> None:
    queue = refresh_queue(client)
    bad = ["Upper.test", "no-dot", "a b.test", "\xe9.test", ".x.test", "1.2.3.4"]
    await client.redis.zadd(client.keys.refresh_due, dict.fromkeys([*bad, "ok.test"], T0))
    await client.redis.zadd(client.keys.refresh_used, dict.fromkeys([*bad, "ok.test"], T0))
    assert await queue.claim(T0) == ["ok.test"]
    assert caplog.text.count("event=fleet-refresh-bad-member") == len(bad)
    assert list(await scores(client, client.keys.refresh_due)) == ["ok.test"]


async def test_large_reports_go_in_chunks(client: FleetClient) -> None:
    queue = refresh_queue(client, batch=5000)
    used = {f"d{i}.test": T0 for i in range(2500)}
    await queue.report(used, dict.fromkeys(used, T0))
    assert await queue.depth(T0) == (2500, 2500)
    assert len(await queue.claim(T0)) == 2500


async def test_the_claim_script_is_loaded_again_where_it_is_missing(client: FleetClient) -> None:
    """A new master after a Sentinel failover (or SCRIPT FLUSH) does not know the script."""
    queue = refresh_queue(client)
    await queue.report({"a.test": T0, "b.test": T0}, {"a.test": T0, "b.test": T0})
    assert await queue.claim(T0) == ["a.test", "b.test"]
    await client.redis.script_flush()
    await queue.done({"a.test": T0})
    assert await queue.claim(T0) == ["a.test"]
