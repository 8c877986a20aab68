"""Refresh without a leader: resolvers in one process (three nodes, one clock) share a real
redis-server and the loopback DNS/HTTPS world; fetches are counted at the policy server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from conftest import StsWorld
from mta_sts_policyd.config.settings import config_from_mapping
from mta_sts_policyd.fleet.connection import FleetClient
from mta_sts_policyd.fleet.refresh_queue import RefreshQueue
from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.service.daemon import Daemon
from support.ports import free_port
from support.redis_server import RedisServer
from support.refresh_fleet import DAY, LONG_POLICY, fleet_client, refresh_queue
from support.resolver_world import ENFORCE_REPLY, FakeClock, make_resolver

JITTER = 3600.0


class Node:
    def __init__(self, resolver: PolicyResolver, client: FleetClient, queue: RefreshQueue):
        self.resolver, self.client, self.queue = resolver, client, queue
        resolver.refresher.shared = queue

    async def tick(self) -> int:
        return await self.resolver.refresher.tick()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_nodes(
    sts_world: StsWorld, clock: FakeClock, redis_server: RedisServer
) -> AsyncIterator[Callable[..., list[Node]]]:
    made: list[Node] = []

    def make(count: int, *, cache: PolicyCache | None = None, **queue: object) -> list[Node]:
        for _ in range(count):
            resolver = make_resolver(sts_world, clock, refresh_concurrency=2)
            if cache is not None:
                resolver.cache = resolver.ctx.cache = cache
            client = fleet_client(redis_server.url)
            made.append(Node(resolver, client, refresh_queue(client, **queue)))  # type: ignore[arg-type]
        return made[-count:]

    yield make
    for node in made:
        await node.resolver.wait_idle()
        await node.client.aclose()


def publish(world: StsWorld, count: int) -> list[str]:
    domains = [f"d{i}.test" for i in range(count)]
    for d in domains:
        world.publish(d, LONG_POLICY, delay=0.01)  # a refetch takes a moment: claims interleave
    return domains


def fetches(world: StsWorld, domains: Sequence[str]) -> dict[str, int]:
    return {d: world.https.request_count(f"mta-sts.{d}") for d in domains}


async def answer_all(nodes: Sequence[Node], domains: Sequence[str]) -> None:
    """Every node answers every domain (its first copy fetched by itself), a node at a time."""
    for node in nodes:
        replies = await asyncio.gather(*(node.resolver.answer("postfix", d) for d in domains))
        assert set(replies) == {ENFORCE_REPLY}
        await node.resolver.wait_idle()


async def rounds(nodes: Sequence[Node], clock: FakeClock, count: int, step: float = 60) -> None:
    """`count` rounds of every node's refresh loop, all nodes at once, `step` seconds apart."""
    for _ in range(count):
        clock.advance(step)
        await asyncio.gather(*(n.tick() for n in nodes))


async def test_three_nodes_refresh_each_domain_once_per_interval(
    sts_world: StsWorld, clock: FakeClock, make_nodes: Callable[..., list[Node]]
) -> None:
    nodes = make_nodes(3, batch=4)
    domains = publish(sts_world, 30)
    await answer_all(nodes, domains)
    start = fetches(sts_world, domains)
    assert set(start.values()) == {3}  # each node fetched its first copy itself
    await rounds(nodes, clock, 1)  # the first reports; nothing is due
    assert fetches(sts_world, domains) == start
    clock.advance(DAY + JITTER)  # every domain's due time (a day plus its jitter) has passed
    await rounds(nodes, clock, 5)
    assert fetches(sts_world, domains) == {d: n + 1 for d, n in start.items()}
    claims = [n.queue.claimed for n in nodes]
    assert sum(claims) == 30 and min(claims) > 0, claims  # spread over the nodes
    clock.advance(DAY + JITTER)  # the next interval: due by the refetch, not by stale copies
    await rounds(nodes, clock, 5)
    assert fetches(sts_world, domains) == {d: n + 2 for d, n in start.items()}
    assert sum(n.queue.claimed for n in nodes) == 60


async def test_claims_of_a_crashed_node_come_back_after_the_lease(
    sts_world: StsWorld, clock: FakeClock, make_nodes: Callable[..., list[Node]]
) -> None:
    crashed, survivor = make_nodes(2, batch=5, lease=600)
    domains = publish(sts_world, 8)
    await answer_all([crashed, survivor], domains)
    await rounds([crashed, survivor], clock, 1)
    start = fetches(sts_world, domains)
    clock.advance(DAY + JITTER)
    lost = await crashed.queue.claim(clock())  # claimed, never refreshed: the node died
    assert len(lost) == 5
    await rounds([survivor], clock, 1)  # the other three
    after = fetches(sts_world, domains)
    assert {d for d in domains if after[d] > start[d]} == set(domains) - set(lost)
    await rounds([survivor], clock, 8)  # 540 s after the claim: still leased
    assert fetches(sts_world, domains) == after
    await rounds([survivor], clock, 1)  # 600 s: the lease ran out
    assert fetches(sts_world, domains) == {d: n + 1 for d, n in start.items()}


async def test_a_domain_no_node_asks_for_leaves_the_queue(
    sts_world: StsWorld, clock: FakeClock, make_nodes: Callable[..., list[Node]]
) -> None:
    (node,) = make_nodes(1, forget_after=3 * DAY)
    publish(sts_world, 2)
    await answer_all([node], ["d0.test", "d1.test"])
    await rounds([node], clock, 1)
    for _ in range(4):  # four days: d1.test keeps being asked for, d0.test not
        clock.advance(DAY)
        assert await node.resolver.answer("postfix", "d1.test") == ENFORCE_REPLY
        await node.resolver.wait_idle()
        await rounds([node], clock, 1)
    keys = node.client.keys
    assert await node.client.redis.zscore(keys.refresh_due, "d0.test") is None
    assert await node.client.redis.zscore(keys.refresh_used, "d0.test") is None
    assert await node.client.redis.zscore(keys.refresh_due, "d1.test") is not None
    assert node.queue.forgotten == 1


async def test_redis_down_the_node_refreshes_what_it_uses_itself(
    sts_world: StsWorld,
    clock: FakeClock,
    make_nodes: Callable[..., list[Node]],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (node,) = make_nodes(1)
    domains = publish(sts_world, 3)
    await answer_all([node], domains)
    await rounds([node], clock, 1)
    start = fetches(sts_world, domains)
    redis_server.kill()
    caplog.set_level(logging.INFO)
    clock.advance(DAY + JITTER)
    await rounds([node], clock, 3)
    assert fetches(sts_world, domains) == {d: n + 1 for d, n in start.items()}
    assert caplog.text.count("event=fleet-refresh-local") == 1  # once per change
    calls = node.client.calls
    await rounds([node], clock, 3)
    assert node.client.calls == calls  # breaker open: no Redis call at all
    redis_server.start()  # empty (no persistence): the node's next report refills it
    await asyncio.sleep(0.35)  # the breaker's reset time
    node.resolver.cache.get(domains[0])  # in use since the outage
    entry = node.resolver.cache.get(domains[0])
    assert entry is not None
    entry.last_used = clock()
    await rounds([node], clock, 1)
    assert "event=fleet-refresh-shared" in caplog.text
    due = await node.client.redis.zscore(node.client.keys.refresh_due, domains[0])
    assert due == node.resolver.refresher.next_due(entry) > clock()  # the local refetch counts
    assert fetches(sts_world, domains) == {d: n + 1 for d, n in start.items()}


async def test_a_frozen_redis_costs_a_timeout_then_the_local_refresh_runs(
    sts_world: StsWorld,
    clock: FakeClock,
    make_nodes: Callable[..., list[Node]],
    redis_server: RedisServer,
) -> None:
    (node,) = make_nodes(1)
    domains = publish(sts_world, 2)
    await answer_all([node], domains)
    await rounds([node], clock, 1)
    start = fetches(sts_world, domains)
    clock.advance(DAY + JITTER)
    redis_server.freeze()
    try:
        began = time.monotonic()
        await rounds([node], clock, 1)
        assert time.monotonic() - began < 2.0  # one 0.3 s command timeout, no retries
    finally:
        redis_server.thaw()
    assert fetches(sts_world, domains) == {d: n + 1 for d, n in start.items()}


async def test_a_claimed_domain_this_node_never_used_is_discovered_and_refetched(
    sts_world: StsWorld, clock: FakeClock, make_nodes: Callable[..., list[Node]]
) -> None:
    user, other = make_nodes(2, batch=10)
    publish(sts_world, 1)
    await answer_all([user], ["d0.test"])
    await rounds([user], clock, 1)
    clock.advance(DAY + JITTER)
    assert await other.tick() == 1  # claimed by the node that never answered it
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 2}
    entry = other.resolver.cache.get("d0.test")
    assert entry is not None and entry.fetched_at == clock() and entry.last_used == 0
    due = await other.client.redis.zscore(other.client.keys.refresh_due, "d0.test")
    assert due == other.resolver.refresher.next_due(entry)
    await rounds([user, other], clock, 1)  # the user's old copy does not make it due again
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 2}


async def test_a_failed_fleet_refresh_keeps_the_policy_and_backs_off(
    sts_world: StsWorld, clock: FakeClock, make_nodes: Callable[..., list[Node]]
) -> None:
    (node,) = make_nodes(1)
    publish(sts_world, 1)
    await answer_all([node], ["d0.test"])
    await rounds([node], clock, 1)
    sts_world.https.set_policy("d0.test", b"", status=500)
    clock.advance(DAY + JITTER)
    await rounds([node], clock, 1)
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 2}
    assert await node.resolver.answer("postfix", "d0.test") == ENFORCE_REPLY  # still unexpired
    await rounds([node], clock, 4)  # 240 s: within the 300 s failure back-off (RFC 8461 §3.3)
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 2}
    await rounds([node], clock, 1)
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 3}


async def test_the_safety_net_refreshes_a_copy_the_fleet_did_not_bring(
    sts_world: StsWorld, clock: FakeClock, make_nodes: Callable[..., list[Node]]
) -> None:
    """Without a shared cache the other node's copy stays old: `slack` after its due time the
    node refreshes it itself (never later than 90 % of max_age)."""
    a, b = make_nodes(2, slack=1800.0, batch=10)
    publish(sts_world, 1)
    await answer_all([a, b], ["d0.test"])
    await rounds([a, b], clock, 1)
    entry = b.resolver.cache.get("d0.test")
    assert entry is not None
    clock.now = b.resolver.refresher.next_due(entry) - 60
    await rounds([a], clock, 1)  # a claims and refreshes it
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 3}
    await rounds([b], clock, 29)  # due + 1740 s
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 3}
    await rounds([b], clock, 1)  # due + slack
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 4}
    await rounds([a, b], clock, 10)
    assert fetches(sts_world, ["d0.test"]) == {"d0.test": 4}


async def test_with_one_shared_copy_the_safety_net_never_fires(
    sts_world: StsWorld, clock: FakeClock, make_nodes: Callable[..., list[Node]]
) -> None:
    """What the shared cache does for the fleet, emulated by one cache for all nodes: with the
    default-like slack, three days of rounds cost one fetch per domain and day (rounds
    every 900 s: a claim comes within the 960 s slack of the due time, as with the
    daemon's 60 s rounds)."""
    nodes = make_nodes(3, cache=PolicyCache(None), slack=960.0, batch=3)
    domains = publish(sts_world, 9)
    await answer_all(nodes[:1], domains)
    for _ in range(3 * 96):  # three days, every domain in use
        await rounds(nodes, clock, 1, step=900)
        for d in domains:
            entry: CacheEntry | None = nodes[0].resolver.cache.get(d)
            assert entry is not None
            entry.last_used = clock()
    assert fetches(sts_world, domains) == dict.fromkeys(domains, 3)
    assert sum(n.queue.claimed for n in nodes) == 2 * len(domains)


async def test_the_daemon_plugs_the_queue_into_its_refresh(
    sts_world: StsWorld, redis_server: RedisServer, tmp_path: Path
) -> None:
    sts_world.publish("d0.test", LONG_POLICY)
    config = config_from_mapping(
        {
            "server": {"listen": [f"127.0.0.1:{free_port()}"], "sts_attributes": False},
            "discovery": {"nameservers": [sts_world.dns.nameserver], "dns_timeout": 1.0,
                          "ca_file": sts_world.https.ca_pem_path,
                          "https_port": sts_world.https.port},
            "cache": {"state_dir": str(tmp_path / "state")},
            "probe": {"enabled": False},
            "fleet": {"redis": redis_server.url, "key_prefix": "wired"},
        }
    )  # fmt: skip
    daemon = Daemon(config)
    await daemon.start()
    try:
        assert daemon.fleet is not None
        assert await daemon.resolver.answer("postfix", "d0.test") == ENFORCE_REPLY
        await daemon.resolver.wait_idle()
        await daemon.resolver.refresher.tick()
        keys = daemon.fleet.keys
        assert keys.refresh_used.startswith("wired:v1:")
        assert await daemon.fleet.redis.zscore(keys.refresh_used, "d0.test") is not None
        assert await daemon.fleet.redis.zscore(keys.refresh_due, "d0.test") > time.time()
    finally:
        await daemon.stop()
