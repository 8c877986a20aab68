"""Single flight across a fleet of real processes (issue 16, "Tests"): 2, 4 and 8
`mta-sts-policyd serve` daemons sharing one redis-server (tests/support/fleet_world.py).

- 200 concurrent first lookups of one domain spread over the daemons: one HTTPS fetch.
- The TXT id changes: one fetch for the whole fleet, no NOTFOUND and no waiting meanwhile.
- A Sentinel failover during lookups: known domains answered throughout, and afterwards the
  fleet shares the new master (one fetch for a new domain, heartbeats there).
"""

from __future__ import annotations

import time

import pytest

from support.daemon_process import wait_until
from support.fleet_world import MakeFleet, SteadyLoad, ask_many, enforce_reply

# ----- single flight across the fleet ---------------------------------------------------------

FLEET_SIZES = [2, pytest.param(4, marks=pytest.mark.slow), pytest.param(8, marks=pytest.mark.slow)]


@pytest.mark.parametrize("nodes", FLEET_SIZES)
def test_200_concurrent_first_lookups_one_fetch(make_fleet: MakeFleet, nodes: int) -> None:
    world = make_fleet(nodes)
    world.publish("cold.test")
    replies = ask_many(world.addresses, ["cold.test"] * 200)
    assert {r for r, _ in replies} == {enforce_reply("cold.test")}
    assert world.fetches("cold.test") == 1
    slowest = max(s for _, s in replies)
    print(f"{nodes} nodes: 200 first lookups, 1 fetch, slowest answer {slowest * 1000:.0f} ms")


@pytest.mark.parametrize("nodes", FLEET_SIZES)
def test_an_id_change_one_fetch_and_no_notfound(make_fleet: MakeFleet, nodes: int) -> None:
    world = make_fleet(nodes, settings={"cache": {"txt_recheck": 1.0}})
    world.publish("moving.test")
    world.warm(["moving.test"])
    assert world.fetches("moving.test") == 1
    old, new = enforce_reply("moving.test"), b"OK secure match=mx2.moving.test servername=hostname"
    with SteadyLoad(world.addresses, ["moving.test"], {"moving.test": {old, new}}) as load:
        time.sleep(0.5)
        policy = "version: STSv1\nmode: enforce\nmx: mx2.moving.test\nmax_age: 86400\n"
        world.publish("moving.test", "2", policy)
        world.https.set_policy("moving.test", policy, delay=1.5)  # an answer waiting shows
        assert wait_until(
            lambda: all(d.query("moving.test") == new for d in world.daemons), timeout=30
        ), world.logs()
        time.sleep(0.5)
    result = load.result
    assert result.wrong == [] and result.errors == 0
    assert set(result.replies) == {b"OK"}
    assert world.fetches("moving.test") == 2  # the first one, and one for the new id
    assert max(result.latencies) < 1.0  # no answer waited for the (1.5 s) refetch
    p99, worst = result.percentile(99) * 1000, max(result.latencies) * 1000
    print(
        f"{nodes} nodes, id change: {result.answers} answers, p99 {p99:.1f} ms, max {worst:.1f} ms"
    )


def test_sentinel_failover_during_lookups(make_fleet: MakeFleet) -> None:
    import redis

    world = make_fleet(2, sentinel=True)
    sentinel = world.sentinel
    domains = [f"known{n}.test" for n in range(10)]
    for domain in domains:
        world.publish(domain)
    world.warm(domains)
    expected = {d: {enforce_reply(d)} for d in domains}
    ask = redis.Redis(port=sentinel.sentinel_port)
    with SteadyLoad(world.addresses, domains, expected) as load:
        time.sleep(0.5)
        sentinel.master.kill()
        promoted = wait_until(
            lambda: int(ask.sentinel_get_master_addr_by_name("fleet")[1]) == sentinel.replica.port,
            timeout=30,
        )
        assert promoted
        assert world.wait_breakers(open_=False, timeout=30), world.logs()
        world.publish("after.test")
        replies = ask_many(world.addresses, ["after.test"] * 40)
        time.sleep(0.5)
    ask.close()
    result = load.result
    assert result.wrong == [] and result.errors == 0
    assert {r for r, _ in replies} == {enforce_reply("after.test")}
    assert world.fetches("after.test") == 1  # the fleet shares the new master
    new_master = redis.Redis(port=sentinel.replica.port)
    heartbeats = {b"node0", b"node1"}
    assert wait_until(lambda: set(new_master.hkeys("fleet-test:v1:nodes")) == heartbeats)
    new_master.close()
    print(f"Sentinel failover under load: {result.answers} answers, p99 "
          f"{result.percentile(99) * 1000:.2f} ms")  # fmt: skip
