"""The fleet's TLS-RPT sender: one report per (day, domain, record) for the whole fleet.

After 00:00 UTC + `settle`, once every node that uploaded a snapshot of the day, and every node
up now that uploads snapshots (its heartbeat says so), has uploaded one after midnight (or
`deadline` passed), the day's snapshots are frozen (ReportLedger.freeze,
first node wins) and every report is built from all of them merged (report_snapshot.merge),
so every node builds the same bytes. Each report is sent under a lease with a fencing token;
its state lives in Redis (report_delivery.py sends one report). Without Redis nothing is sent
(no double sends in a split): the reports wait and catch up when it returns. Clock and RNG are
injected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import date, timedelta

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.fleet.nodes import node_condition, read_nodes
from mta_sts_policyd.fleet.report_delivery import ReportDelivery
from mta_sts_policyd.fleet.report_ledger import ReportState
from mta_sts_policyd.fleet.report_snapshot import (
    NodeSnapshot,
    SnapshotInvalid,
    decode_snapshot,
    merge,
    state_field,
)
from mta_sts_policyd.tlsrpt.model import DomainDay
from mta_sts_policyd.tlsrpt.sender import midnight_after
from mta_sts_policyd.tlsrpt.store.aggregates import utc_day

log = logging.getLogger(__name__)


def decode_all(raw: dict[str, bytes], day: date) -> dict[str, NodeSnapshot]:
    """The valid snapshots of a hash; a malformed one is logged and left out."""
    out: dict[str, NodeSnapshot] = {}
    for node, value in raw.items():
        try:
            out[node] = decode_snapshot(value, node=node, day=day)
        except SnapshotInvalid as exc:
            log.warning(
                "event=fleet-snapshot-invalid day=%s node=%r reason=%r", day, node, str(exc)
            )
    return out


class FleetReportSender:
    def __init__(self, reports: ReportDelivery, *, settle: float, deadline: float) -> None:
        """`reports` sends one report under its lease; its ledger, settings, clock and random
        source are the ones this sender schedules with."""
        self.reports = reports
        self.ledger = reports.ledger
        self.delivery = reports.delivery
        self.settle = settle
        self.deadline = max(deadline, settle)
        self.clock = reports.clock
        self.rng = reports.rng
        self.done: set[date] = set()
        """Days whose every report is resolved (or that had nothing to report)."""
        self._waiting_logged: set[date] = set()
        self._merged: dict[date, list[DomainDay]] = {}
        """The reports of days whose inputs are frozen (they never change once frozen)."""
        self._redis_failing = False

    def open_days(self, today: date) -> list[date]:
        """Ended days within the catch-up bound not yet resolved (kept in the local store)."""
        days = (today - timedelta(days=n) for n in range(1, self.delivery.catch_up_days + 1))
        return [d for d in days if d not in self.done]

    async def tick(self) -> None:
        """One pass over the ended days; stops at the first Redis failure (nothing is sent
        without Redis) and is simply run again later."""
        now = self.clock()
        try:
            await self.reports.write_unrecorded()
            for day in reversed(self.open_days(utc_day(now))):
                await self._day(day, now)
        except FleetUnavailable as exc:
            if not self._redis_failing:  # once per change
                self._redis_failing = True
                log.warning("event=fleet-reports-waiting reason=%r", str(exc))
            return
        if self._redis_failing:
            self._redis_failing = False
            log.info("event=fleet-reports-resumed")
        for day in [d for d in self._merged if d in self.done]:
            del self._merged[day]

    async def _day(self, day: date, now: float) -> None:
        midnight = midnight_after(day)
        if now < midnight + self.settle:
            return
        merged = self._merged.get(day)
        if merged is None:
            raw = await self.ledger.inputs(day)
            if not raw:
                raw = await self._freeze(day, now, midnight)
            if not raw:
                return
            # off the event loop: a fleet's day can be megabytes of JSON
            merged = await asyncio.to_thread(lambda: merge(decode_all(raw, day)))
            self._merged[day] = merged
        states = await self.ledger.states(day)
        pending = [dd for dd in merged if not _final(states.get(_field(dd)))]
        if not pending:
            self.done.add(day)
            return
        self.rng.shuffle(pending)  # nodes start at different reports: the leases spread
        for dd in pending:
            st = states.get(_field(dd))
            if midnight + self.settle + send_delay(dd, self.delivery.send_delay_max) > now:
                continue
            if st is not None and st.state == "retry" and st.due > self.clock():
                continue
            await self._leased(dd)

    async def _freeze(self, day: date, now: float, midnight: float) -> dict[str, bytes]:
        """Freeze the day's inputs when every node is in, or at the deadline."""
        snaps = await self.ledger.snapshot_status(day)
        late = now >= midnight + self.deadline
        if not snaps:
            if late:
                self.done.add(day)  # no node counted anything that day
            return {}
        unfinished = {n for n, final in snaps.items() if not final}
        waiting = sorted(unfinished | (await self._reporting_nodes(now) - snaps.keys()))
        if waiting and not late:
            if day not in self._waiting_logged:
                self._waiting_logged.add(day)
                log.info("event=fleet-reports-waiting-for-nodes day=%s nodes=%s", day,
                         ",".join(waiting))  # fmt: skip
            return {}
        if await self.ledger.freeze(day):
            log.info(
                "event=fleet-report-inputs-frozen day=%s nodes=%d left_out=%s",
                day, len(snaps), ",".join(waiting) or "-",
            )  # fmt: skip
        return await self.ledger.inputs(day)

    async def _reporting_nodes(self, now: float) -> set[str]:
        """Nodes up now (heartbeat) that upload TLS-RPT snapshots: each uploads a final one of
        every ended day, so the fleet waits for one it has not seen yet (cut off from Redis
        that day, or Redis lost its data) instead of leaving it out."""
        nodes = await read_nodes(self.ledger.client)
        return {
            name
            for name, rec in nodes.items()
            if rec is not None and rec.snapshots and node_condition(rec, now) == "up"
        }

    async def _leased(self, dd: DomainDay) -> None:
        name = _field(dd)
        token = await self.ledger.take_lease(dd.day, name)
        if token is None:
            return  # another node is on it
        await self.reports.send(dd, name, token)
        await self.ledger.release(dd.day, name, token)


def send_delay(dd: DomainDay, spread: float) -> float:
    """Seconds after midnight + settle before a report goes out: spread over `spread` (the
    single host's send_delay_max) so a fleet does not send every report at one moment, and
    the same on every node (derived from the report, not drawn at random)."""
    if spread <= 0:
        return 0.0
    key = f"{dd.day} {_field(dd)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % int(spread * 1000) / 1000


def _field(dd: DomainDay) -> str:
    return state_field(dd.report_domain, dd.tlsrpt_record)


def _final(state: ReportState | None) -> bool:
    return state is not None and state.final
