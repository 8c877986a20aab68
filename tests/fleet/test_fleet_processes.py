"""The fleet as real processes (issue 16, "Tests"): `mta-sts-policyd serve` daemons sharing
one redis-server, the loopback DNS server and an HTTPS policy host that counts its requests per
domain (tests/support/fleet_world.py). Single flight and Sentinel failover are in
test_fleet_single_flight.py.

- Redis killed (kill -9) or frozen (SIGSTOP) under steady load: every known enforce domain
  still answered `secure` (p99 printed), the breaker metric shows open, Redis calls stop while
  it is open (only the breaker's trial calls); Redis back: breakers close, no refetch storm,
  and a domain one node discovered alone during the outage reaches Redis from its queue and
  the other nodes adopt it without fetching.
  A few seconds in the default run, 60 s in the slow-marked run.
- Every node's heartbeat in `fleet status`.
"""

from __future__ import annotations

import json
import time

import pytest

from support.daemon_process import wait_until
from support.fleet_world import (
    FLEET_DEFAULTS,
    FleetWorld,
    LoadResult,
    MakeFleet,
    SteadyLoad,
    enforce_reply,
)


def status(world: FleetWorld) -> dict[str, object]:
    out = world.daemons[0].cli("fleet", "status", "--json", "-c", str(world.daemons[0].config_path))
    assert out.returncode in (0, 75), out.stderr
    data: dict[str, object] = json.loads(out.stdout)
    return data


def conditions(world: FleetWorld) -> dict[str, str]:
    data = status(world)
    return {n["name"]: n["condition"] for n in data["nodes"]}  # type: ignore[attr-defined]


def test_every_node_in_fleet_status(make_fleet: MakeFleet) -> None:
    world = make_fleet(3)
    assert wait_until(lambda: conditions(world) == dict.fromkeys(("node0", "node1", "node2"), "up"))
    world.daemons[1].stop()
    world.daemons[2].proc.kill()  # no farewell: gone after four missed 1 s heartbeats
    assert wait_until(
        lambda: conditions(world) == {"node0": "up", "node1": "stopped", "node2": "gone"},
        timeout=15,
    )


# ----- Redis down or slow ---------------------------------------------------------------------

KNOWN = [f"known{n}.test" for n in range(20)]


def outage(world: FleetWorld, how: str, seconds: float) -> dict[str, object]:
    """Steady load on every known domain on every node; Redis killed or frozen for `seconds`;
    then back. Returns what was seen."""
    for domain in KNOWN:
        world.publish(domain)
    world.warm(KNOWN)
    fetched = {d: world.fetches(d) for d in KNOWN}
    assert world.wait_breakers(open_=False)
    expected = {d: {enforce_reply(d)} for d in KNOWN}
    nodes = range(len(world.daemons))
    seen_open = dict.fromkeys(nodes, False)
    calls_while_open = dict.fromkeys(nodes, 0.0)
    with SteadyLoad(world.addresses, KNOWN, expected) as load:
        time.sleep(1.0)
        before = load.snapshot()[0]
        if how == "kill":
            world.redis.kill()
        else:
            world.redis.freeze()
        first_open: dict[int, float] = {}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for n in nodes:
                scraped = world.scrape(n)
                if scraped["mta_sts_policyd_fleet_breaker_open"] == 1.0:
                    seen_open[n] = True
                    calls = scraped["mta_sts_policyd_fleet_redis_calls_total"]
                    first_open.setdefault(n, calls)
                    calls_while_open[n] = calls - first_open[n]
            time.sleep(0.25)
        during = load.snapshot()[0] - before
        # A domain first asked during the outage: node0 discovers it itself (one fetch) and
        # queues its write for Redis.
        world.publish("during.test")
        new_during = world.daemons[0].query("during.test")
        # Queued at once while the breaker is open; when the write is the half-open breaker's
        # trial call, it is queued once that call times out against the stopped Redis.
        queued = wait_until(lambda: world.metric(0, "fleet_queued_writes") == 1, timeout=15)
        if how == "kill":
            world.redis.start()
        else:
            world.redis.thaw()
        closed = world.wait_breakers(open_=False, timeout=30)
        # Converged: the queued write reached Redis, the other nodes adopt it without a fetch.
        drained = wait_until(lambda: world.metric(0, "fleet_queued_writes") == 0, timeout=15)
        adopted = [d.query("during.test") for d in world.daemons[1:]]
        time.sleep(1.0)
    result = load.result
    return {
        "result": result, "during": during, "seen_open": seen_open, "closed_again": closed,
        "calls_while_open": calls_while_open, "new_during": new_during, "queued": queued,
        "drained": drained, "adopted": adopted, "during_fetches": world.fetches("during.test"),
        "refetched": {
            d: world.fetches(d) - fetched[d] for d in KNOWN if world.fetches(d) != fetched[d]
        },
    }  # fmt: skip


def check_outage(world: FleetWorld, seen: dict[str, object], how: str, seconds: float) -> None:
    result = seen["result"]
    assert isinstance(result, LoadResult)
    print(f"Redis {how} for {seconds:.0f} s, {len(world.daemons)} nodes: {result.answers} "
          f"answers ({seen['during']} during the outage), p50 {result.percentile(50) * 1000:.2f} "
          f"ms, p99 {result.percentile(99) * 1000:.2f} ms, max {max(result.latencies) * 1000:.1f}"
          f" ms; Redis calls while open per node {seen['calls_while_open']}")  # fmt: skip
    assert result.wrong == [] and result.errors == 0, result.wrong[:5]
    assert set(result.replies) == {b"OK"}
    assert seen["during"] > 0
    assert all(seen["seen_open"].values()), seen["seen_open"]  # type: ignore[attr-defined]
    assert seen["closed_again"], world.logs()
    # While open no lookup reaches Redis: only the trial calls (one per breaker_reset, 1 s).
    bound = seconds / FLEET_DEFAULTS["breaker_reset"] * 3 + 10
    assert all(c <= bound for c in seen["calls_while_open"].values()), seen["calls_while_open"]  # type: ignore[attr-defined]
    assert seen["refetched"] == {}  # no refetch storm when Redis is back
    # The node that discovered a domain alone wrote it to Redis once back; the others adopt it.
    assert seen["new_during"] == enforce_reply("during.test")
    assert seen["queued"] and seen["drained"], world.logs()
    assert seen["adopted"] == [enforce_reply("during.test")] * (len(world.daemons) - 1)
    assert seen["during_fetches"] == 1
    assert wait_until(lambda: set(conditions(world).values()) == {"up"}, timeout=20)


@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_short_redis_outage_under_load(make_fleet: MakeFleet, how: str) -> None:
    world = make_fleet(3)
    seen = outage(world, how, 5.0)
    check_outage(world, seen, how, 5.0)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_60s_redis_outage_under_load(make_fleet: MakeFleet, how: str) -> None:
    world = make_fleet(4)
    seen = outage(world, how, 60.0)
    check_outage(world, seen, how, 60.0)
