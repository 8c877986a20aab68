"""The shared policy cache: several resolvers in one process share one real redis-server and one
HTTPS policy server that counts requests (docs/fleet.md "Shared policy cache")."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from conftest import StsWorld
from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.fleet import policy_codec as codec
from mta_sts_policyd.fleet.breaker import BreakerState
from mta_sts_policyd.fleet.shared_policies import PendingWrite
from mta_sts_policyd.policy.entry import CacheEntry
from mta_sts_policyd.policy.shared_model import SharedFailure
from mta_sts_policyd.service.control import ControlServer
from mta_sts_policyd.sts.policy import parse_policy
from support.dns_server import DnsServer
from support.fleet_nodes import FleetNode, make_node
from support.https_server import HttpsServer
from support.redis_server import RedisServer
from support.resolver_world import ENFORCE, ENFORCE_REPLY, NOTFOUND, T0, FakeClock

D = "example.test"
HOST = f"mta-sts.{D}"
ENFORCE2 = ENFORCE.replace("mail.example.test", "mx2.example.test")
ENFORCE2_REPLY = ENFORCE_REPLY.replace(b"mail.example.test", b"mx2.example.test")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def nodes(
    sts_world: StsWorld, redis_server: RedisServer, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Callable[..., FleetNode]]:
    made: list[FleetNode] = []

    def node(name: str | None = None, **settings: object) -> FleetNode:
        name = name or f"n{len(made) + 1}"
        made.append(make_node(sts_world, redis_server.url, clock, name, **settings))
        return made[-1]

    yield node
    for n in made:
        await n.close()


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_200_first_lookups_over_4_nodes_cost_one_fetch(
    sts_world: StsWorld, https_server: HttpsServer, nodes: Callable[..., FleetNode]
) -> None:
    sts_world.publish(D, ENFORCE)
    fleet = [nodes() for _ in range(4)]
    for n in fleet:
        n.listen()
    for n in fleet:
        await n.subscribed()
    replies = await asyncio.gather(
        *(fleet[i % 4].resolver.answer("postfix", D) for i in range(200))
    )
    assert set(replies) == {ENFORCE_REPLY}
    assert https_server.request_count(HOST) == 1
    roles: dict[str, int] = {}
    for n in fleet:
        for role in ("fetched", "adopted", "waited", "fallback"):
            roles[role] = roles.get(role, 0) + n.resolver.stats.fleet.get(role, 0)
    assert roles["fetched"] == 1 and roles["fallback"] == 0
    assert roles["adopted"] + roles["waited"] == 3


async def test_an_id_change_costs_one_fetch_and_no_answer_waits(
    sts_world: StsWorld,
    https_server: HttpsServer,
    nodes: Callable[..., FleetNode],
    clock: FakeClock,
) -> None:
    sts_world.publish(D, ENFORCE)
    fleet = [nodes() for _ in range(4)]
    for n in fleet:
        n.listen()
    for n in fleet:
        await n.subscribed()
    assert {await n.resolver.answer("postfix", D) for n in fleet} == {ENFORCE_REPLY}
    assert https_server.request_count(HOST) == 1
    sts_world.publish(D, ENFORCE2, txt="v=STSv1; id=2")
    https_server.set_policy(D, ENFORCE2, delay=0.3)
    clock.advance(120)  # past the TXT re-check: every node looks again, in the background
    started = time.monotonic()
    replies = await asyncio.gather(*(fleet[i % 4].resolver.answer("postfix", D) for i in range(80)))
    assert time.monotonic() - started < 0.25  # nobody waited for the 0.3 s fetch
    assert set(replies) == {ENFORCE_REPLY}  # the old valid policy meanwhile, never NOTFOUND
    for n in fleet:
        await until(lambda n=n: (e := n.resolver.cache.get(D)) is not None and e.policy_id == "2")
        await n.resolver.wait_idle()
    assert {await n.resolver.answer("postfix", D) for n in fleet} == {ENFORCE2_REPLY}
    assert https_server.request_count(HOST) == 2


async def test_a_malformed_or_forged_shared_entry_is_refused(
    sts_world: StsWorld,
    https_server: HttpsServer,
    redis_server: RedisServer,
    nodes: Callable[..., FleetNode],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sts_world.publish(D, ENFORCE)
    a = nodes()
    key = a.client.keys.policy(D)
    forged = {
        "v": 1, "domain": D, "id": "1", "mode": "enforce", "max_age": 86400,
        "mx": ["evil.example"], "lines": ["version: STSv1", "mode: none", "max_age: 86400"],
        "fetched_at": T0, "node": "x",
    }  # fmt: skip
    for value in (b"\x00garbage", json.dumps(forged).encode()):
        await a.client.run(lambda r, v=value: r.set(key, v), "test write")
        a.resolver.cache.remove(D)
        assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY  # fetched itself
        await a.resolver.wait_idle()
    assert https_server.request_count(HOST) == 2
    assert "event=fleet-value-refused" in caplog.text
    # The node's own fetch replaced the forged value (a malformed entry blocks no write).
    raw = await a.client.run(lambda r: r.get(key), "test read")
    assert json.loads(raw)["mx"] == ["mail.example.test"]


async def test_an_older_shared_entry_never_downgrades(
    sts_world: StsWorld, nodes: Callable[..., FleetNode], clock: FakeClock
) -> None:
    sts_world.publish(D, ENFORCE)
    a, b = nodes(), nodes()
    b.listen()
    await b.subscribed()
    clock.advance(100)
    assert await b.resolver.answer("postfix", D) == ENFORCE_REPLY  # b fetched at T0 + 100
    entry = b.resolver.cache.get(D)
    assert entry is not None and entry.fetched_at == T0 + 100
    # a writes an entry of the same id fetched earlier: Redis keeps the newer one ...
    older = a.resolver.cache.get(D) or entry.__class__(D)
    older.policy_id, older.policy, older.fetched_at = "1", entry.policy, T0
    await a.shared.put_policy(older)
    raw = await a.client.run(lambda r: r.get(a.client.keys.policy(D)), "test read")
    assert json.loads(raw)["fetched_at"] == T0 + 100
    # ... and one forced in behind its back, announced, is not adopted either.
    testing = json.loads(raw) | {"fetched_at": T0, "mode": "testing",
                                 "lines": [ln.replace("enforce", "testing") for ln in
                                           json.loads(raw)["lines"]]}  # fmt: skip
    await a.client.run(lambda r: r.set(a.client.keys.policy(D), json.dumps(testing)), "test")
    await a.client.run(lambda r: r.publish(a.client.keys.invalidations, f"{D} 99"), "test")
    await until(lambda: b.invalidations.messages >= 1)
    await b.resolver.wait_idle()
    assert await b.resolver.revalidate_shared() >= 0
    assert b.resolver.cache.get(D) is entry and entry.fetched_at == T0 + 100
    assert await b.resolver.answer("postfix", D) == ENFORCE_REPLY


def forged_testing(fetched_at: float) -> dict[str, object]:
    """A well-formed shared entry of id 1 that says `testing` with another MX host."""
    lines = ["version: STSv1", "mode: testing", "mx: evil.example", "max_age: 86400"]
    return {"v": 1, "domain": D, "id": "1", "mode": "testing", "max_age": 86400,
            "mx": ["evil.example"], "lines": lines, "fetched_at": fetched_at,
            "node": "n1"}  # fmt: skip


async def test_another_policy_under_the_held_id_is_refused_and_fetched_once_for_the_fleet(
    sts_world: StsWorld,
    https_server: HttpsServer,
    nodes: Callable[..., FleetNode],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis writer puts a `testing` policy with other MX hosts under the id every node holds,
    with a current fetch time, and announces it: no node adopts it (an id names one policy,
    RFC 8461 §3.1); they fetch the real one, once for the fleet, and it replaces the forgery."""
    sts_world.publish(D, ENFORCE)
    a, b = nodes(), nodes()
    for n in (a, b):
        n.listen()
        await n.subscribed()
        assert await n.resolver.answer("postfix", D) == ENFORCE_REPLY
    assert https_server.request_count(HOST) == 1
    clock.advance(10)
    forged = forged_testing(clock())
    k = a.client.keys
    await a.client.run(lambda r: r.set(k.policy(D), json.dumps(forged)), "a Redis writer")
    version = await a.client.run(lambda r: r.hincrby(k.versions, D, 1), "a Redis writer")
    clock.advance(1)
    await a.client.run(lambda r: r.publish(k.invalidations, f"{D} {version}"), "a Redis writer")
    await until(lambda: https_server.request_count(HOST) == 2)
    for n in (a, b):
        await until(lambda n=n: n.resolver.cache.get(D).fetched_at == clock())  # type: ignore[union-attr]
        await n.resolver.wait_idle()
        assert await n.resolver.answer("postfix", D) == ENFORCE_REPLY
        entry = n.resolver.cache.get(D)
        assert entry is not None and entry.policy is not None
        assert entry.policy.mx == ("mail.example.test",)
    assert https_server.request_count(HOST) == 2  # one refetch for the fleet
    assert "event=fleet-policy-refused" in caplog.text and "shared_mode=testing" in caplog.text
    raw = await a.client.run(lambda r: r.get(k.policy(D)), "test read")
    assert json.loads(raw)["mx"] == ["mail.example.test"]  # the real policy replaced it


async def test_a_cold_node_adopts_a_shared_entry_only_under_the_id_its_own_txt_shows(
    sts_world: StsWorld,
    https_server: HttpsServer,
    nodes: Callable[..., FleetNode],
) -> None:
    """For a domain a node does not hold, the only check is the id: an entry under another id
    than DNS shows is never adopted (docs/fleet.md says what a Redis writer can do)."""
    sts_world.publish(D, ENFORCE, txt="v=STSv1; id=2")
    a = nodes()
    forged = forged_testing(T0)
    await a.client.run(lambda r: r.set(a.client.keys.policy(D), json.dumps(forged)), "writer")
    assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
    assert https_server.request_count(HOST) == 1


async def test_a_newer_shared_entry_is_adopted_by_invalidation_and_by_revalidation(
    sts_world: StsWorld, https_server: HttpsServer, nodes: Callable[..., FleetNode],
    clock: FakeClock,
) -> None:  # fmt: skip
    sts_world.publish(D, ENFORCE)
    a, b, c = nodes(), nodes(), nodes()
    b.listen()
    await b.subscribed()
    for n in (a, b, c):
        assert await n.resolver.answer("postfix", D) == ENFORCE_REPLY
    assert https_server.request_count(HOST) == 1
    clock.advance(3600)
    await a.resolver.refresh_domain(D)  # a real refetch (same id), shared with the fleet
    assert https_server.request_count(HOST) == 2
    await until(lambda: (e := b.resolver.cache.get(D)) is not None and e.fetched_at == T0 + 3600)
    # c did not listen (a lost message): its revalidation finds the new version.
    assert c.resolver.cache.get(D).fetched_at == T0  # type: ignore[union-attr]
    assert await c.resolver.revalidate_shared() == 1
    assert c.resolver.cache.get(D).fetched_at == T0 + 3600  # type: ignore[union-attr]
    assert https_server.request_count(HOST) == 2


async def test_the_failure_back_off_is_shared(
    sts_world: StsWorld, https_server: HttpsServer, nodes: Callable[..., FleetNode]
) -> None:
    sts_world.publish(D, ENFORCE, status=500)
    a, b = nodes(), nodes()
    assert await a.resolver.answer("postfix", D) == NOTFOUND
    await a.resolver.wait_idle()
    assert https_server.request_count(HOST) == 1
    # b never fetched this id, but the fleet tried it moments ago (RFC 8461 §3.3 per id).
    assert await b.resolver.answer("postfix", D) == NOTFOUND
    await b.resolver.wait_idle()
    assert https_server.request_count(HOST) == 1
    entry = b.resolver.cache.get(D)
    assert entry is not None and entry.failed_id == "1" and entry.failure is not None


async def test_a_good_refetch_ends_the_fleets_failure_back_off_at_once(
    sts_world: StsWorld,
    https_server: HttpsServer,
    nodes: Callable[..., FleetNode],
    clock: FakeClock,
) -> None:
    """The operator's case: the policy file is gone (404), every node fails open; once it is
    back, `cache refresh` on one node is adopted by the others at once (by invalidation, or
    by revalidation for one that missed the message), not after `failure_backoff`."""
    sts_world.publish(D, ENFORCE, status=404)
    a, b, c = nodes(), nodes(), nodes()
    b.listen()
    await b.subscribed()
    for n in (a, b, c):
        assert await n.resolver.answer("postfix", D) == NOTFOUND
        await n.resolver.wait_idle()
    assert https_server.request_count(HOST) == 1
    failure = a.client.keys.failure(D)
    assert await a.client.run(lambda r: r.exists(failure), "test") == 1
    sts_world.publish(D, ENFORCE)
    clock.advance(5)  # well within failure_backoff (300 s) and txt_recheck (60 s)
    entry = await a.resolver.refresh_domain(D)
    assert entry is not None and entry.policy is not None
    # The write removed the failure record in the same step: nobody honours it any more.
    assert await a.client.run(lambda r: r.exists(failure), "test") == 0
    await until(lambda: (e := b.resolver.cache.get(D)) is not None and e.policy is not None)
    assert await b.resolver.answer("postfix", D) == ENFORCE_REPLY
    assert await c.resolver.revalidate_shared() == 1  # c missed the message
    await c.resolver.wait_idle()
    assert await c.resolver.answer("postfix", D) == ENFORCE_REPLY
    assert https_server.request_count(HOST) == 2  # adopted, not fetched again


async def test_a_policy_write_removes_only_a_failure_record_older_than_its_fetch(
    nodes: Callable[..., FleetNode],
) -> None:
    a = nodes()
    failure = a.client.keys.failure(D)
    policy = parse_policy(ENFORCE.encode())
    fault = SharedFailure("1", T0 + 10, ResultType.STS_WEBPKI_INVALID, "test")
    await a.shared.put_failure(D, fault, 300.0)
    await a.shared.put_policy(CacheEntry(D, policy_id="1", policy=policy, fetched_at=T0))
    assert await a.client.run(lambda r: r.exists(failure), "test") == 1  # newer: it stays
    await a.shared.put_policy(CacheEntry(D, policy_id="1", policy=policy, fetched_at=T0 + 20))
    assert await a.client.run(lambda r: r.exists(failure), "test") == 0
    view = await a.shared.view(D)
    assert view.failure is None and view.policy is not None and view.policy.fetched_at == T0 + 20


async def test_no_policy_published_is_shared(
    sts_world: StsWorld, dns_server: DnsServer, nodes: Callable[..., FleetNode]
) -> None:
    sts_world.publish(D, None, txt=None)
    a, b = nodes(), nodes()
    assert await a.resolver.answer("postfix", D) == NOTFOUND
    await a.resolver.wait_idle()
    asked = dns_server.query_count(f"_mta-sts.{D}", "TXT")
    assert asked >= 1
    assert await b.resolver.answer("postfix", D) == NOTFOUND
    assert dns_server.query_count(f"_mta-sts.{D}", "TXT") == asked  # b asked Redis, not DNS
    assert b.resolver.known_absent(D)


async def test_purge_and_show_work_fleet_wide(
    sts_world: StsWorld, nodes: Callable[..., FleetNode]
) -> None:
    sts_world.publish(D, ENFORCE)
    a, b = nodes(), nodes()
    b.listen()
    await b.subscribed()
    for n in (a, b):
        assert await n.resolver.answer("postfix", D) == ENFORCE_REPLY
    shown = await ControlServer(b.resolver).handle("show", D)
    assert shown["entry"]["tier"] == "memory" and shown["entry"]["origin"] == "redis"
    assert shown["entry"]["shared"]["id"] == "1"
    refreshed = await ControlServer(b.resolver).handle("refresh", D)  # the fleet's view too
    assert refreshed["entry"]["tier"] == "memory" and refreshed["entry"]["shared"]["id"] == "1"
    result = await ControlServer(a.resolver).handle("purge", D)
    assert result == {"ok": True, "purged": 1, "shared_purged": 1}
    await until(lambda: b.resolver.cache.get(D) is None)
    assert await a.client.run(lambda r: r.get(a.client.keys.policy(D)), "test") is None
    missing = await ControlServer(a.resolver).handle("show", D)
    assert missing["ok"] is False


async def test_purge_takes_the_domains_out_of_the_shared_refresh_queue(
    sts_world: StsWorld, nodes: Callable[..., FleetNode]
) -> None:
    """Before, `cache purge` (all) left "refresh queue: 3 domains" and the purged domains were
    refetched when due."""
    sts_world.publish(D, ENFORCE)
    a = nodes()
    assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
    k, queued = a.client.keys, {D: T0 + 100, "two.test": T0 + 200, "three.test": T0 + 300}
    await a.client.run(lambda r: r.zadd(k.refresh_due, queued), "seed")
    await a.client.run(lambda r: r.zadd(k.refresh_used, queued), "seed")

    async def members(key: str) -> set[bytes]:
        return set(await a.client.run(lambda r: r.zrange(key, 0, -1), "test read"))

    assert (await ControlServer(a.resolver).handle("purge", D))["ok"] is True
    for key in (k.refresh_due, k.refresh_used):
        assert await members(key) == {b"two.test", b"three.test"}
    assert (await ControlServer(a.resolver).handle("purge", None))["ok"] is True
    for key in (k.refresh_due, k.refresh_used):
        assert await members(key) == set()


async def test_redis_killed_known_domains_answered_no_calls_writes_reconciled(
    sts_world: StsWorld,
    https_server: HttpsServer,
    redis_server: RedisServer,
    nodes: Callable[..., FleetNode],
) -> None:
    sts_world.publish(D, ENFORCE)
    sts_world.publish("new.test", ENFORCE.replace("mail.example.test", "mail.new.test"))
    a = nodes()
    a.listen()
    await a.subscribed()
    assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
    redis_server.kill()
    # A cold domain is discovered here while Redis fails: the breaker opens, the write queues.
    assert (await a.resolver.answer("postfix", "new.test")).startswith(b"OK secure")
    await a.resolver.wait_idle()
    await until(lambda: a.client.breaker.state is BreakerState.OPEN)
    assert list(a.shared.queue) == ["new.test"]
    calls = a.client.calls
    for _ in range(50):
        assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
    sts_world.publish("cold.test", ENFORCE.replace("mail.example.test", "mail.cold.test"))
    assert (await a.resolver.answer("postfix", "cold.test")).startswith(b"OK secure")
    await a.resolver.wait_idle()
    assert a.client.calls == calls  # zero Redis calls while the breaker is open
    assert a.resolver.stats.fleet["fallback"] >= 2
    redis_server.start()  # empty: no persistence
    await until(lambda: not a.shared.queue and a.invalidations.subscribed, within=5)
    for domain in ("new.test", "cold.test"):
        raw = await a.client.run(lambda r, d=domain: r.get(a.client.keys.policy(d)), "test")
        assert json.loads(raw)["domain"] == domain


async def test_redis_frozen_known_domains_answered_at_once(
    sts_world: StsWorld, redis_server: RedisServer, nodes: Callable[..., FleetNode]
) -> None:
    sts_world.publish(D, ENFORCE)
    a = nodes()
    a.listen()
    await a.subscribed()
    assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
    redis_server.freeze()
    try:
        worst = 0.0
        for _ in range(100):
            started = time.monotonic()
            assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
            worst = max(worst, time.monotonic() - started)
        assert worst < 0.05
        sts_world.publish("cold.test", ENFORCE.replace("mail.example.test", "mail.cold.test"))
        # A cold domain costs at most the command timeouts until the breaker opens.
        assert (await a.resolver.answer("postfix", "cold.test")).startswith(b"OK secure")
        await a.resolver.wait_idle()
    finally:
        redis_server.thaw()
    await until(lambda: not a.shared.queue, within=5)


async def test_a_queued_write_never_replaces_a_newer_shared_entry(
    sts_world: StsWorld, nodes: Callable[..., FleetNode], clock: FakeClock
) -> None:
    sts_world.publish(D, ENFORCE)
    a, b = nodes(), nodes()
    assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
    entry = a.resolver.cache.get(D)
    assert entry is not None
    a.shared.queue.clear()
    older = CacheEntry(D, policy_id="1", policy=entry.policy, fetched_at=T0 - 50)
    await a.shared.put_policy(older)  # Redis holds a's fetch at T0: refused, not queued
    assert not a.shared.queue
    # Redis away at write time: the older fetch waits in the queue ...
    a.shared._enqueue(
        PendingWrite(D, codec.encode_policy(older, "n1"), older.fetched_at, T0 + 10**6)
    )
    clock.advance(10)
    await b.resolver.refresh_domain(D)  # ... while b writes a newer one
    assert await a.shared.reconcile() == 1 and not a.shared.queue
    raw = await a.client.run(lambda r: r.get(a.client.keys.policy(D)), "test")
    assert json.loads(raw)["fetched_at"] == T0 + 10 and json.loads(raw)["node"] == b.name


async def test_the_write_queue_keeps_the_newest_per_domain_and_is_bounded(
    nodes: Callable[..., FleetNode],
) -> None:
    a = nodes()
    a.shared.queue_limit = 3
    for n, when in enumerate((5.0, 9.0, 7.0)):
        a.shared._enqueue(PendingWrite("one.test", str(n).encode(), T0 + when, T0 + 100))
    assert a.shared.queue["one.test"].fetched_at == T0 + 9.0
    for name in ("two.test", "three.test", "four.test"):
        a.shared._enqueue(PendingWrite(name, b"", T0, T0 + 100))
    assert list(a.shared.queue) == ["two.test", "three.test", "four.test"]  # oldest dropped


async def test_after_a_restart_with_redis_down_the_store_answers(
    sts_world: StsWorld,
    https_server: HttpsServer,
    redis_server: RedisServer,
    nodes: Callable[..., FleetNode],
    tmp_path: Path,
) -> None:
    sts_world.publish(D, ENFORCE)
    store = tmp_path / "policies.sqlite"
    first = nodes("a", store=store)
    assert await first.resolver.answer("postfix", D) == ENFORCE_REPLY
    await first.resolver.wait_idle()
    cache = first.resolver.cache
    await asyncio.to_thread(cache.write_batch, *cache.take_batch())
    redis_server.kill()
    again = nodes("a2", store=store)  # a restart: the same store ...
    await asyncio.to_thread(again.resolver.cache.load, T0)
    again.resolver.cache.hot_set.clear()  # ... the domain not among the most recent
    assert await again.resolver.answer("postfix", D) == ENFORCE_REPLY
    await again.resolver.wait_idle()
    assert again.resolver.stats.tier_hits()["store"] == 1
    assert https_server.request_count(HOST) == 1


async def test_show_names_the_tier_an_entry_came_from(
    sts_world: StsWorld, nodes: Callable[..., FleetNode], tmp_path: Path
) -> None:
    sts_world.publish(D, ENFORCE)
    a, b = nodes(), nodes(store=tmp_path / "b.sqlite")
    assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
    only_redis = await ControlServer(b.resolver).handle("show", D)
    assert only_redis["entry"]["tier"] == "redis" and only_redis["entry"]["mode"] == "enforce"
    assert await b.resolver.answer("postfix", D) == ENFORCE_REPLY
    cache = b.resolver.cache
    await asyncio.to_thread(cache.write_batch, *cache.take_batch())
    cache.hot_set.pop(D)
    stored = await ControlServer(b.resolver).handle("show", D)
    assert stored["entry"]["tier"] == "store"
    assert stored["entry"]["shared"]["version"] == 1


@pytest.mark.parametrize("status", [200, 500])
async def test_a_cold_loser_waits_for_the_winners_result(
    sts_world: StsWorld,
    https_server: HttpsServer,
    nodes: Callable[..., FleetNode],
    status: int,
) -> None:
    sts_world.publish(D, ENFORCE, status=status, delay=0.5)
    a, b = nodes(), nodes()
    b.listen()
    await b.subscribed()
    first = asyncio.create_task(a.resolver.answer("postfix", D))
    await until(lambda: https_server.request_count(HOST) == 1)  # a holds the lock, fetching
    started = time.monotonic()
    reply = await b.resolver.answer("postfix", D)
    waited = time.monotonic() - started
    assert reply == await first == (ENFORCE_REPLY if status == 200 else NOTFOUND)
    await b.resolver.wait_idle()
    assert https_server.request_count(HOST) == 1  # the failure is shared as well
    assert b.resolver.stats.fleet.get("lock_waits") == 1
    assert b.resolver.stats.fleet.get("waited", 0) == (1 if status == 200 else 0)
    assert waited < 2.0  # woken by the winner's message, far from cold_wait (5 s)


async def test_a_lock_left_by_a_dead_node_costs_no_notfound(
    sts_world: StsWorld, https_server: HttpsServer, nodes: Callable[..., FleetNode]
) -> None:
    sts_world.publish(D, ENFORCE)
    a = nodes(cold_wait=1.0)
    lock = a.client.keys.fetch_lock(D)
    await a.client.run(lambda r: r.set(lock, "dead 1", px=30_000), "a crashed holder")
    started = time.monotonic()
    assert await a.resolver.answer("postfix", D) == ENFORCE_REPLY
    assert 0.5 <= time.monotonic() - started < 1.0  # waited half of cold_wait, then fetched
    assert a.resolver.stats.fleet.get("fallback") == 1
    await a.resolver.wait_idle()
    assert https_server.request_count(HOST) == 1
