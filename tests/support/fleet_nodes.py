"""Several resolvers in one process sharing one real Redis: the fleet's shared policy cache
without daemon processes (those are in daemon_process.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import StsWorld
from mta_sts_policyd.fleet.breaker import CircuitBreaker
from mta_sts_policyd.fleet.connection import FleetClient, FleetSettings, open_redis
from mta_sts_policyd.fleet.invalidation import Invalidations
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.shared_policies import SharedPolicyCache
from mta_sts_policyd.policy.resolver import PolicyResolver
from support.resolver_world import FakeClock, make_resolver

PREFIX = "t"


def fleet_settings(url: str, **changes: object) -> FleetSettings:
    """Short timeouts: a dead or frozen Redis costs tests little."""
    values: dict[str, object] = dict(
        redis_url=url, sentinels=(), service="", password=None, ca_file=None,
        key_prefix=PREFIX, node_name="n1", connect_timeout=0.3, command_timeout=0.2,
        breaker_failures=2, breaker_reset=0.5, fetch_lock=5.0, entry_grace=60.0,
        revalidate_interval=60.0, refresh_lease=60.0, refresh_batch=10, forget_after=3600.0,
        snapshot_interval=60.0, report_settle=0.0, report_deadline=0.0,
    )  # fmt: skip
    values.update(changes)
    return FleetSettings(**values)  # type: ignore[arg-type]


def guarded_client(settings: FleetSettings) -> FleetClient:
    breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset, time.monotonic)
    return FleetClient(open_redis(settings), FleetKeys(settings.key_prefix), breaker)


@dataclass
class FleetNode:
    """One resolver with its own guarded client, shared tier and invalidation loops."""

    name: str
    resolver: PolicyResolver
    client: FleetClient
    shared: SharedPolicyCache
    invalidations: Invalidations
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def listen(self) -> None:
        """Run the subscriber (and the revalidation loop) like a daemon does."""
        self.tasks.append(asyncio.create_task(self.invalidations.run()))
        self.tasks.append(asyncio.create_task(self.invalidations.run_revalidation()))

    async def subscribed(self, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while not self.invalidations.subscribed:
            assert time.monotonic() < deadline, f"{self.name} did not subscribe"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.resolver.wait_idle()
        await self.resolver.discovery.aclose()  # type: ignore[attr-defined]
        await self.client.aclose()


def make_node(
    world: StsWorld,
    url: str,
    clock: FakeClock,
    name: str,
    store: Path | None = None,
    *,
    fleet: dict[str, object] | None = None,
    **settings: object,
) -> FleetNode:
    s = fleet_settings(url, node_name=name, **(fleet or {}))
    resolver = make_resolver(world, clock, store, **settings)
    client = guarded_client(s)
    shared = SharedPolicyCache(
        client,
        node=name,
        fetch_lock=s.fetch_lock,
        entry_grace=s.entry_grace,
        negative_limit=resolver.settings.negative_ttl,
        clock=clock,
    )
    resolver.attach_shared(shared)
    invalidations = Invalidations(
        client, shared, resolver, revalidate_interval=s.revalidate_interval, listen_poll=0.1
    )
    return FleetNode(name, resolver, client, shared, invalidations)
