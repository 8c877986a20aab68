"""Each node's share of the fleet's TLS reports: its counts of each open day, uploaded to Redis.

The local SQLite store stays the source of truth; Redis gets a copy of each day (snapshot:DAY,
field = node name) every snapshot interval while it changes, and once more right after the day
ends (`final`: the node's counts of the day are complete). HSET replaces the node's field, so a
re-upload never counts anything twice. A node that was down or cut off at midnight uploads
when it is back, until the day's inputs are frozen (then it is left out, and logged).

Only under a name that is this process's alone (name_claim.py): while another daemon uses the
same node name nothing is uploaded (each would replace the other's counts; they stay in the
local stores), and everything is uploaded afresh once the conflict is over.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import date, timedelta

from mta_sts_policyd.fleet.connection import FleetClient, Redis
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.name_claim import NameClaim
from mta_sts_policyd.fleet.report_snapshot import encode_snapshot
from mta_sts_policyd.tlsrpt.sender import midnight_after
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore, utc_day

log = logging.getLogger(__name__)

MAX_DAYS_SHOWN = 3
"""Days whose last upload time the heartbeat carries (`fleet status`)."""


class SnapshotUploader:
    def __init__(
        self,
        client: FleetClient,
        keys: FleetKeys,
        store: TlsRptStore,
        node: str,
        *,
        deadline: float,
        keep_seconds: float,
        clock: Callable[[], float] = time.time,
        claim: NameClaim | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.store = store
        self.node = node
        self.deadline = deadline
        self.keep_ms = max(int(keep_seconds * 1000), 1)
        self.clock = clock
        self._uploaded: dict[date, tuple[str, bool]] = {}
        """Day -> (content digest, final) of this node's last upload."""
        self._closed: set[date] = set()
        """Days whose fleet inputs are frozen: nothing more to upload."""
        self.last_upload: dict[str, float] = {}
        """Day -> when this node last uploaded its counts of it (the heartbeat shows them)."""
        self.claim = claim
        """This process's claim on its node name (None: not checked, as in tests of one node)."""
        self.held = False
        """The last pass uploaded nothing because the name is not (yet) this process's alone."""
        self._conflict = False

    async def tick(self) -> int:
        """Upload every open day that changed; returns how many were uploaded. Raises
        FleetUnavailable at the first Redis failure (the next pass tries again)."""
        now = self.clock()
        if self._hold(now):
            return 0
        today = utc_day(now)
        await asyncio.to_thread(self.store.flush)
        uploaded = 0
        yesterday = today - timedelta(days=1)
        counted = set(await asyncio.to_thread(self.store.days))
        for day in sorted(counted | {yesterday}):  # yesterday also when empty: the fleet waits
            if day in self._closed or day > today:
                continue
            if day < today and now >= midnight_after(day) + self.deadline:
                self._too_late(day, counted=day in counted)
                continue
            uploaded += await self._upload(day, now, final=day < today, counted=day in counted)
        return uploaded

    def _hold(self, now: float) -> bool:
        """Not under a name shared with another daemon, nor before the name is confirmed."""
        claim = self.claim
        if claim is None:
            return False
        conflict = claim.in_conflict(now)
        if conflict != self._conflict:
            if conflict:
                log.warning(
                    "event=fleet-snapshots-held node=%s reason='another running daemon uses this"
                    " node name; counts stay in the local store'",
                    self.node,
                )
            else:
                log.info("event=fleet-snapshots-resumed node=%s", self.node)
            self._conflict = conflict
        self.held = not claim.may_upload(now)
        if self.held:
            self._uploaded.clear()  # what the field holds now may be the other daemon's
        return self.held

    async def _upload(self, day: date, now: float, *, final: bool, counted: bool) -> int:
        if final and await self._frozen_without_us(day, counted=counted):
            return 0
        body = await asyncio.to_thread(self._encoded, day, final)
        digest = hashlib.sha256(body.encode()).hexdigest()
        key = self.keys.snapshot(day.isoformat())
        if self._uploaded.get(day) == (digest, final) and await self.client.run(
            lambda r: r.hexists(key, self.node), "check snapshot"
        ):
            return 0  # unchanged and still there (a Redis restart would have lost it)

        status = self.keys.snapshot_status(day.isoformat())

        async def write(r: Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(key, self.node, body)
                pipe.hset(status, self.node, "final" if final else "open")
                pipe.pexpire(key, self.keep_ms)
                pipe.pexpire(status, self.keep_ms)
                await pipe.execute()

        await self.client.run(write, "upload snapshot")
        self._uploaded[day] = (digest, final)
        self.last_upload[day.isoformat()] = now
        for old in sorted(self.last_upload)[:-MAX_DAYS_SHOWN]:
            del self.last_upload[old]
        log.debug("event=fleet-snapshot-uploaded day=%s final=%s bytes=%d", day, final, len(body))
        return 1

    def _too_late(self, day: date, *, counted: bool) -> None:
        """Past the deadline the fleet has sent (or sends) the day without this node's final
        counts: say so once if this node has counts it never uploaded."""
        self._closed.add(day)
        if counted and not self._uploaded.get(day, ("", False))[1]:
            log.warning(
                "event=fleet-snapshot-left-out day=%s node=%s reason=back-after-deadline",
                day, self.node,
            )  # fmt: skip

    def _encoded(self, day: date, final: bool) -> str:
        """The day's snapshot, read and encoded in a thread (off the event loop)."""
        dds = self.store.domain_days(day)
        return encode_snapshot(self.node, day, final=final, domain_days=dds)

    async def _frozen_without_us(self, day: date, *, counted: bool) -> bool:
        """Once the day's inputs are frozen an upload changes nothing: stop, and say so if
        this node's counts are not in them (it came back too late)."""
        key = self.keys.report_inputs(day.isoformat())
        exists, ours = await self.client.run(
            lambda r: _exists_and_field(r, key, self.node), "check report inputs"
        )
        if not exists:
            return False
        self._closed.add(day)
        if counted and not ours:
            log.warning(
                "event=fleet-snapshot-left-out day=%s node=%s reason=inputs-frozen-before-upload",
                day, self.node,
            )  # fmt: skip
        return True


async def _exists_and_field(r: Redis, key: str, field: str) -> tuple[bool, bool]:
    async with r.pipeline(transaction=False) as pipe:
        pipe.exists(key)
        pipe.hexists(key, field)
        exists, ours = await pipe.execute()
    return bool(exists), bool(ours)
