"""What `fleet status` shows, read straight from Redis (no running daemon needed).

The nodes and their heartbeats (`nodes.py`), the shared refresh queue (depth, due now), how
many policies the shared cache holds, and for the last few UTC days which nodes uploaded
TLS-RPT counts and how many fleet reports are recorded as sent. Read-only: it never writes.
The JSON form (`as_json`) is a documented, stable schema (docs/fleet.md, `schema_version`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mta_sts_policyd.fleet.connection import FleetClient, Redis
from mta_sts_policyd.fleet.nodes import (
    NodeRecord,
    gone_after,
    name_conflict,
    node_condition,
    read_nodes,
)

SCHEMA_VERSION = 1
SCAN_BATCH = 10_000
MAX_SCAN_CALLS = 500
"""The shared-policy count stops (and says "at least") after this many SCAN calls."""
DAYS = 3


@dataclass(frozen=True)
class DayReports:
    day: str
    snapshot_nodes: tuple[str, ...]
    """Nodes whose TLS-RPT counts of the day are in Redis."""
    reports: int
    """(domain, record) reports the fleet has state for."""
    sent: int
    states: dict[str, int]
    """State name (sending, retry, sent, failed, no-destination) -> reports in it."""

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day, "snapshot_nodes": list(self.snapshot_nodes),
                "reports": self.reports, "sent": self.sent,
                "states": dict(sorted(self.states.items()))}  # fmt: skip


@dataclass(frozen=True)
class FleetStatus:
    redis: str
    key_prefix: str
    now: float
    nodes: dict[str, NodeRecord | None]
    refresh_depth: int
    refresh_due_now: int
    shared_policies: int
    shared_policies_complete: bool
    days: tuple[DayReports, ...]

    def condition(self, name: str) -> str:
        record = self.nodes[name]
        return "unreadable" if record is None else node_condition(record, self.now)

    def as_json(self) -> dict[str, Any]:
        nodes = []
        for name in sorted(self.nodes):
            rec = self.nodes[name]
            row: dict[str, Any] = {"name": name, "condition": self.condition(name)}
            if rec is not None:
                row.update(
                    version=rec.version, started=rec.started, last_seen=rec.seen,
                    seconds_since_seen=round(max(0.0, self.now - rec.seen), 1),
                    heartbeat_interval=rec.interval, gone_after=gone_after(rec),
                    breaker=rec.breaker, queued_writes=rec.queued_writes,
                    refresh_due_seen=rec.refresh_due, redis_errors=rec.redis_errors,
                    snapshots=dict(sorted(rec.snapshots.items())),
                    name_conflict=name_conflict(rec, self.now),
                )  # fmt: skip
            nodes.append(row)
        return {
            "schema_version": SCHEMA_VERSION,
            "redis": self.redis,
            "key_prefix": self.key_prefix,
            "now": self.now,
            "nodes": nodes,
            "refresh_queue": {"depth": self.refresh_depth, "due_now": self.refresh_due_now},
            "shared_policies": {
                "count": self.shared_policies,
                "complete": self.shared_policies_complete,
            },
            "reports": [d.as_json() for d in self.days],
        }


def recent_days(now: float, count: int = DAYS) -> list[str]:
    """Today and the `count - 1` UTC days before it, newest first."""
    today = datetime.fromtimestamp(now, UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(count)]


def _state(raw: Any) -> str:
    """A report-state value's state name; `unreadable` for anything else (never trusted)."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return "unreadable"
    state = data.get("state") if isinstance(data, dict) else None
    if isinstance(state, str) and 0 < len(state) <= 20 and state.replace("-", "").isalpha():
        return state
    return "unreadable"


async def _count_policies(client: FleetClient) -> tuple[int, bool]:
    pattern = client.keys.policy("*")
    cursor: int = 0
    total = 0
    for _ in range(MAX_SCAN_CALLS):

        async def scan(r: Redis, at: int = cursor) -> tuple[int, list[Any]]:
            result: tuple[int, list[Any]] = await r.scan(at, match=pattern, count=SCAN_BATCH)
            return result

        cursor, found = await client.run(scan, "count shared policies")
        total += len(found)
        if int(cursor) == 0:
            return total, True
    return total, False


async def _day(client: FleetClient, day: str) -> DayReports:
    keys = client.keys

    async def read(r: Redis) -> tuple[list[Any], list[Any]]:
        nodes: list[Any] = await r.hkeys(keys.snapshot(day))
        states: list[Any] = await r.hvals(keys.report_state(day))
        return nodes, states

    nodes, states = await client.run(read, "read report state")
    names = sorted(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in nodes)
    counts: dict[str, int] = {}
    for raw in states:
        name = _state(raw)
        counts[name] = counts.get(name, 0) + 1
    return DayReports(day, tuple(names), len(states), counts.get("sent", 0), counts)


async def collect_status(client: FleetClient, redis_name: str, now: float) -> FleetStatus:
    """Everything `fleet status` shows; raises errors.FleetUnavailable if Redis fails."""
    nodes = await read_nodes(client, log_invalid=False)
    due_key = client.keys.refresh_due
    depth = await client.run(lambda r: r.zcard(due_key), "read refresh queue")
    due_now = await client.run(lambda r: r.zcount(due_key, "-inf", now), "read refresh queue")
    policies, complete = await _count_policies(client)
    days = [await _day(client, day) for day in recent_days(now)]
    return FleetStatus(
        redis=redis_name, key_prefix=client.keys.prefix, now=now, nodes=nodes,
        refresh_depth=int(depth), refresh_due_now=int(due_now), shared_policies=policies,
        shared_policies_complete=complete, days=tuple(days),
    )  # fmt: skip
