"""Write N shared policies into Redis through the fleet's own write path (bench/fleet.py).

    python bench/fleet_fill.py redis://127.0.0.1:6390/0 100000

Each domain gets what a node's fetch writes: a CacheEntry with a parsed enforce policy (two MX
patterns, max_age one week), handed to the shared tier's `put_policy` (its codec, the
newest-wins script, the versions hash, the invalidation message). Run as its own process so the
orchestrator does not import the package's Redis client.
"""

from __future__ import annotations

import asyncio
import sys
import time

from mta_sts_policyd.fleet.breaker import CircuitBreaker
from mta_sts_policyd.fleet.connection import FleetClient, FleetSettings, open_redis
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.shared_policies import SharedPolicyCache
from mta_sts_policyd.policy.entry import CacheEntry
from mta_sts_policyd.sts.policy import parse_policy

CONCURRENCY = 200
POLICY = b"version: STSv1\nmode: enforce\nmx: mx1.%s\nmx: *.mx.%s\nmax_age: 604800\n"


def settings(url: str) -> FleetSettings:
    return FleetSettings(
        redis_url=url, sentinels=(), service="", password=None, ca_file=None,
        key_prefix="mta-sts", node_name="bench", connect_timeout=2.0, command_timeout=2.0,
        breaker_failures=1000, breaker_reset=1.0, fetch_lock=30.0, entry_grace=7 * 86400.0,
        revalidate_interval=300.0, refresh_lease=600.0, refresh_batch=50,
        forget_after=30 * 86400.0, snapshot_interval=300.0, report_settle=3600.0,
        report_deadline=21600.0,
    )  # fmt: skip


async def fill(url: str, count: int) -> None:
    s = settings(url)
    breaker = CircuitBreaker(s.breaker_failures, s.breaker_reset, time.monotonic)
    client = FleetClient(open_redis(s), FleetKeys(s.key_prefix), breaker)
    shared = SharedPolicyCache(
        client, node=s.node_name, fetch_lock=s.fetch_lock, entry_grace=s.entry_grace,
        negative_limit=300.0,
    )  # fmt: skip
    now = time.time()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            domain = f"d{n}.fleet.bench.test"
            policy = parse_policy(POLICY % (domain.encode(), domain.encode()))
            entry = CacheEntry(
                domain=domain, policy_id=f"20261202T{n:06d}", policy=policy, fetched_at=now,
                expires_at=now + policy.max_age, txt_checked_at=now, last_used=now,
            )  # fmt: skip
            await shared.put_policy(entry)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    if shared.queue:
        raise SystemExit(f"{len(shared.queue)} writes did not reach Redis")
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(fill(sys.argv[1], int(sys.argv[2])))
