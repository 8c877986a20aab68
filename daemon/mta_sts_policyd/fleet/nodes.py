"""Each node's heartbeat in Redis, so `fleet status` can say who is in the fleet and how each is.

Every `interval` seconds a background task writes this node's record (JSON) into one hash,
`HSET nodes NAME record`: when it was last seen, its version, its breaker state, how many
shared writes it holds for Redis, the depth of the shared refresh queue it last saw, the
days whose TLS-RPT counts it last uploaded, and this process's instance id. Before writing it
reads the record under its name: another running daemon's there is a name conflict
(name_claim.py), logged as an error at every heartbeat while it lasts and shown by status.
Never on the answer path: a heartbeat that cannot reach Redis is skipped (the guarded client
makes no call while the breaker is open) and the next one tries again. A node that missed
`GONE_AFTER_BEATS` of its heartbeats is shown as gone; one not seen for `FORGET_AFTER` is
removed from the hash by whichever node notices.

Records read back are validated like any Redis value (a trust boundary): a malformed one is
shown as unreadable, never trusted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.fleet.connection import FleetClient, Redis
from mta_sts_policyd.fleet.name_claim import NameClaim

log = logging.getLogger(__name__)

INTERVAL = 15.0
"""Seconds between two heartbeats of a node (`[fleet] heartbeat_interval`)."""
GONE_AFTER_BEATS = 4
"""A node not seen for this many of its intervals is shown as gone (three beats missed)."""
FORGET_AFTER = 7 * 86400.0
"""A node not seen for this long leaves the hash (a retired host)."""
PRUNE_EVERY = 3600.0
MAX_RECORD = 64 * 1024
"""A record larger than this is not a heartbeat (bytes)."""
MAX_SNAPSHOT_DAYS = 16


@dataclass(frozen=True)
class NodeRecord:
    """One node's heartbeat as stored in Redis (times are epoch seconds, wall clock)."""

    name: str
    version: str
    started: float
    seen: float
    interval: float = INTERVAL
    """This node's heartbeat interval (how long a silence means it is gone)."""
    state: str = "running"
    """`running`, or `stopped` after a clean shutdown (then it is not "gone", it left)."""
    breaker: str = "closed"
    queued_writes: int = 0
    refresh_due: int | None = None
    """Entries in the shared refresh queue when this node last looked; None: not known."""
    redis_errors: int = 0
    snapshots: Mapping[str, float] = field(default_factory=dict)
    """UTC day (YYYY-MM-DD) -> when this node last uploaded its TLS-RPT counts of that day."""
    instance: str = ""
    """The writing process's random id ("": a daemon from before instance ids)."""
    conflict_at: float = 0.0
    """When the writer last saw another running daemon under this name (0.0: never)."""

    def to_json(self) -> str:
        data = {
            "name": self.name, "version": self.version, "started": self.started,
            "seen": self.seen, "interval": self.interval, "state": self.state,
            "breaker": self.breaker,
            "queued_writes": self.queued_writes, "refresh_due": self.refresh_due,
            "redis_errors": self.redis_errors, "snapshots": dict(self.snapshots),
            "instance": self.instance, "conflict_at": self.conflict_at,
        }  # fmt: skip
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def _text(value: Any, limit: int = 255) -> str:
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise ValueError(f"expected short printable text, got {value!r}")
    return value


def _snapshots(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or len(value) > MAX_SNAPSHOT_DAYS:
        raise ValueError("snapshots: expected a small object")
    days: dict[str, float] = {}
    for day, when in value.items():
        if not (isinstance(day, str) and len(day) == 10 and day[4] == day[7] == "-"):
            raise ValueError(f"snapshots: expected YYYY-MM-DD days, got {day!r}")
        days[day] = _number(when)
    return days


def parse_record(name: str, raw: bytes | str) -> NodeRecord:
    """A heartbeat read from Redis, validated field by field; ValueError if it is not one."""
    if len(raw) > MAX_RECORD:
        raise ValueError("record too large")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    refresh_due = data.get("refresh_due")
    return NodeRecord(
        name=_text(name),
        version=_text(data.get("version", "")),
        started=_number(data.get("started", 0)),
        seen=_number(data.get("seen")),
        interval=_number(data.get("interval", INTERVAL)),
        state=_text(data.get("state", "running"), 16),
        breaker=_text(data.get("breaker", "closed"), 16),
        queued_writes=_count(data.get("queued_writes", 0)),
        refresh_due=None if refresh_due is None else _count(refresh_due),
        redis_errors=_count(data.get("redis_errors", 0)),
        snapshots=_snapshots(data.get("snapshots", {})),
        instance=_text(data.get("instance", ""), 64),
        conflict_at=_number(data.get("conflict_at", 0)),
    )


def gone_after(record: NodeRecord) -> float:
    return GONE_AFTER_BEATS * record.interval


def name_conflict(record: NodeRecord, now: float) -> bool:
    """The node's writer saw another running daemon under its name lately (within its hold)."""
    return record.conflict_at > 0 and now - record.conflict_at <= gone_after(record)


def node_condition(record: NodeRecord, now: float) -> str:
    """`up`, `stopped` (left cleanly) or `gone` (no heartbeat for `gone_after`)."""
    if record.state == "stopped":
        return "stopped"
    return "gone" if now - record.seen > gone_after(record) else "up"


@dataclass
class NodeFacts:
    """What this node reports beside its name, read at each heartbeat (providers plugged in by
    the composition root; each returns its current value)."""

    queued_writes: Callable[[], int] = lambda: 0
    snapshots: Callable[[], Mapping[str, float]] = dict


class Heartbeat:
    """This node's record in the `nodes` hash, rewritten every `interval` seconds."""

    def __init__(
        self,
        client: FleetClient,
        name: str,
        version: str,
        clock: Callable[[], float],
        facts: NodeFacts | None = None,
        interval: float = INTERVAL,
        claim: NameClaim | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.version = version
        self.clock = clock
        self.facts = facts or NodeFacts()
        self.interval = interval
        self.claim = claim or NameClaim()
        self.claim.hold = GONE_AFTER_BEATS * interval
        self.started = clock()
        self.refresh_due: int | None = None
        self.beats = 0
        self._last_prune = 0.0
        self._failing = False

    def record(self, state: str = "running") -> NodeRecord:
        return NodeRecord(
            name=self.name, version=self.version, started=self.started, seen=self.clock(),
            interval=self.interval, state=state, breaker=self.client.breaker.state.value,
            queued_writes=max(0, int(self.facts.queued_writes())),
            refresh_due=self.refresh_due, redis_errors=self.client.errors,
            snapshots=dict(self.facts.snapshots()), instance=self.claim.instance,
            conflict_at=self.claim.conflict_at,
        )  # fmt: skip

    async def beat(self, state: str = "running") -> bool:
        """Look at the refresh queue and the record under this name, write the record; False
        (logged once) if Redis failed."""
        keys = self.client.keys

        async def look(r: Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.zcard(keys.refresh_due)
            pipe.hget(keys.nodes, self.name)
            return list(await pipe.execute())

        try:
            due, current = await self.client.run(look, "heartbeat")
            self.refresh_due = int(due)
            self._check_name(current)
            text = self.record(state).to_json()
            await self.client.run(lambda r: r.hset(keys.nodes, self.name, text), "heartbeat")
        except FleetUnavailable as exc:
            if not self._failing:
                log.info("event=fleet-heartbeat-skipped node=%s reason=%r", self.name, str(exc))
            self._failing = True
            return False
        if self._failing:
            log.info("event=fleet-heartbeat-resumed node=%s", self.name)
        self._failing = False
        self.beats += 1
        return True

    def _check_name(self, raw: bytes | None) -> None:
        """Another daemon's record under this name: an error at every heartbeat while it lasts."""
        now = self.clock()
        if raw is not None:
            try:
                found = parse_record(self.name, raw)
            except (ValueError, UnicodeDecodeError):
                pass  # not a heartbeat: this one replaces it
            else:
                self.claim.observe(found.instance, found.state, found.seen, self.started, now)
        if self.claim.in_conflict(now):
            log.error(
                "event=fleet-node-name-conflict node=%s instance=%s other_instance=%s"
                " reason='another running daemon writes its heartbeat under this [fleet]"
                " node_name; TLS-RPT counts are not uploaded until each has its own name'",
                self.name, self.claim.instance, self.claim.other,
            )  # fmt: skip

    async def run(self) -> None:
        """Beat now and every `interval`; forget long-gone nodes about hourly."""
        log.info("event=fleet-node-started node=%s interval=%.0f", self.name, self.interval)
        while True:
            if await self.beat() and self.clock() - self._last_prune >= PRUNE_EVERY:
                self._last_prune = self.clock()
                await self.prune()
            await asyncio.sleep(self.interval)

    async def prune(self, forget_after: float = FORGET_AFTER) -> list[str]:
        """Remove nodes not seen for `forget_after` (and records that do not parse)."""
        try:
            records = await read_nodes(self.client)
        except FleetUnavailable:
            return []
        now = self.clock()
        stale = [
            name for name, rec in records.items()
            if rec is None or now - rec.seen > forget_after
        ]  # fmt: skip
        if stale:
            try:
                await self.client.run(lambda r: r.hdel(self.client.keys.nodes, *stale), "prune")
            except FleetUnavailable:
                return []
            log.info("event=fleet-nodes-forgotten nodes=%s", ",".join(stale))
        return stale

    async def farewell(self) -> None:
        """On a clean stop: the record says `stopped`, so status does not call it gone."""
        await self.beat("stopped")


_LOGGED_INVALID: set[tuple[str, bytes]] = set()
"""(node, value) pairs already logged as invalid: a bad record is logged once, not per read."""


async def read_nodes(client: FleetClient, log_invalid: bool = True) -> dict[str, NodeRecord | None]:
    """Every node's record (None where the stored value is not a valid heartbeat). The daemon
    logs an invalid record once; `fleet status` shows it as unreadable instead."""

    async def hgetall(r: Redis) -> dict[Any, Any]:
        result: dict[Any, Any] = await r.hgetall(client.keys.nodes)
        return result

    raw = await client.run(hgetall, "read nodes")
    records: dict[str, NodeRecord | None] = {}
    for key, value in raw.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        try:
            records[name] = parse_record(name, value)
        except (ValueError, UnicodeDecodeError) as exc:
            records[name] = None
            seen = (name, value if isinstance(value, bytes) else str(value).encode())
            if log_invalid and seen not in _LOGGED_INVALID and len(_LOGGED_INVALID) < 1000:
                _LOGGED_INVALID.add(seen)
                log.warning("event=fleet-node-record-invalid node=%r reason=%r", name, str(exc))
    return records
