"""Refresh without a leader together with the shared policy cache: three resolvers with their
own caches, the shared tier and its invalidations, and the refresh queue on one real
redis-server. Days of refresh rounds cost one HTTPS fetch per domain and interval for the whole
fleet: the fleet's refetch reaches every node, so no node's own safety net ever fetches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from conftest import StsWorld
from support.fleet_nodes import FleetNode, make_node
from support.redis_server import RedisServer
from support.refresh_fleet import DAY, LONG_POLICY, refresh_queue
from support.resolver_world import ENFORCE_REPLY, FakeClock

ROUND = 600.0
"""Seconds between refresh rounds here (the daemon's are 60 s; 600 s keeps the test short and
still brings each claim within the slack of its due time)."""
SLACK = ROUND + 600.0 + 60.0
"""fleet_parts.refresh_slack with these rounds, a 600 s lease and a 60 s revalidation."""


@pytest.fixture
async def fleet(
    sts_world: StsWorld, redis_server: RedisServer
) -> AsyncIterator[Callable[[int, FakeClock], list[FleetNode]]]:
    made: list[FleetNode] = []

    def make(count: int, clock: FakeClock) -> list[FleetNode]:
        for i in range(count):
            node = make_node(sts_world, redis_server.url, clock, f"n{i}")
            node.resolver.refresher.shared = refresh_queue(node.client, batch=4, slack=SLACK)
            node.listen()
            made.append(node)
        return made

    yield make
    for node in made:
        await node.close()


def fetches(world: StsWorld, domains: Sequence[str]) -> dict[str, int]:
    return {d: world.https.request_count(f"mta-sts.{d}") for d in domains}


async def converged(nodes: Sequence[FleetNode], domains: Sequence[str]) -> None:
    """Every node holds the newest fetch of every domain (invalidations are asynchronous)."""
    deadline = time.monotonic() + 5.0
    while True:
        times = {
            d: {e.fetched_at if (e := n.resolver.cache.get(d)) else 0.0 for n in nodes}
            for d in domains
        }
        if all(len(t) == 1 for t in times.values()):
            return
        assert time.monotonic() < deadline, times
        await asyncio.sleep(0.01)


async def test_days_of_rounds_cost_one_fetch_per_domain_and_interval(
    sts_world: StsWorld, fleet: Callable[[int, FakeClock], list[FleetNode]]
) -> None:
    clock = FakeClock()
    nodes = fleet(3, clock)
    for node in nodes:
        await node.subscribed()
    domains = [f"d{i}.test" for i in range(8)]
    for d in domains:
        sts_world.publish(d, LONG_POLICY)
    for node in nodes:  # the first node fetches, the others adopt its copies
        for d in domains:
            assert await node.resolver.answer("postfix", d) == ENFORCE_REPLY
        await node.resolver.wait_idle()
    assert fetches(sts_world, domains) == dict.fromkeys(domains, 1)
    rounds = int((2 * DAY + 2 * 3600 + 2 * ROUND) // ROUND)  # two intervals and their jitter
    for _ in range(rounds):
        clock.advance(ROUND)
        for node in nodes:  # every domain in use on every node
            for d in domains:
                entry = node.resolver.cache.get(d)
                assert entry is not None
                entry.last_used = clock()
        await asyncio.gather(*(n.resolver.refresher.tick() for n in nodes))
        for node in nodes:
            await node.resolver.wait_idle()
        await converged(nodes, domains)
    assert fetches(sts_world, domains) == dict.fromkeys(domains, 3)
    claims = [n.resolver.refresher.shared.claimed for n in nodes]  # type: ignore[union-attr]
    assert sum(claims) == 2 * len(domains), claims


async def test_a_claim_for_a_domain_held_elsewhere_adopts_or_fetches(
    sts_world: StsWorld, fleet: Callable[[int, FakeClock], list[FleetNode]]
) -> None:
    """The claimer never answered either domain. d0: the shared copy is as old as the claim
    says, adopted and then fetched after all. d1: the user refetched it meanwhile (the queue did
    not hear of it): the shared copy is fresh, adopted, only rescheduled."""
    clock = FakeClock()
    user, claimer = fleet(2, clock)
    await claimer.subscribed()
    for d in ("d0.test", "d1.test"):
        sts_world.publish(d, LONG_POLICY)
        assert await user.resolver.answer("postfix", d) == ENFORCE_REPLY
    await user.resolver.wait_idle()
    await user.resolver.refresher.tick()  # reported: both due a day (and jitter) on
    clock.advance(DAY + 3600)
    await user.resolver.refresh_domain("d1.test")
    assert fetches(sts_world, ["d0.test", "d1.test"]) == {"d0.test": 1, "d1.test": 2}
    assert await claimer.resolver.refresher.tick() == 2
    await claimer.resolver.wait_idle()
    assert fetches(sts_world, ["d0.test", "d1.test"]) == {"d0.test": 2, "d1.test": 2}
    for d, origin in (("d0.test", "fetched"), ("d1.test", "redis")):
        entry = claimer.resolver.cache.get(d)
        assert entry is not None and entry.fetched_at == clock() and entry.origin == origin
        due = await claimer.client.redis.zscore(claimer.client.keys.refresh_due, d)
        assert due == claimer.resolver.refresher.next_due(entry)
    await converged([user, claimer], ["d0.test", "d1.test"])
