"""The fleet's TLS-RPT sender: one report per (day, domain, record) for the whole fleet.

After 00:00 UTC + `settle`, once every node that uploaded a snapshot of the day, and every node
up now that uploads snapshots (its heartbeat says so), has uploaded one after midnight (or
`deadline` passed), the day's snapshots are frozen (ReportLedger.freeze,
first node wins) and every report is built from all of them merged (report_snapshot.merge),
so every node builds the same bytes. Each report is sent under a lease with a fencing token;
its state lives in Redis. Without Redis nothing is sent (no double sends in a split): the
reports wait and catch up when it returns.

A node that dies between handing a report to the relay and recording it leaves the state
`sending`; the node that takes the report over after the lease expires re-sends the same bytes
(same Date, Message-ID and DKIM header, kept in the state) to the same destination and counts a
possible duplicate (fleet_possible_duplicates). Clock and RNG are injected.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import Protocol

from mta_sts_policyd import metrics
from mta_sts_policyd.errors import DnsLookupError, FleetUnavailable
from mta_sts_policyd.fleet.nodes import node_condition, read_nodes
from mta_sts_policyd.fleet.report_ledger import ReportLedger, ReportState
from mta_sts_policyd.fleet.report_snapshot import (
    NodeSnapshot,
    SnapshotInvalid,
    decode_snapshot,
    merge,
    state_field,
)
from mta_sts_policyd.tlsrpt.deliver import DeliveryError, DeliverySettings, Stamp
from mta_sts_policyd.tlsrpt.model import DomainDay
from mta_sts_policyd.tlsrpt.record import (
    RecordSyntaxError,
    RuaDestination,
    TlsRptRecord,
    TxtQuery,
    fetch_tlsrpt_record,
    parse_tlsrpt_record,
)
from mta_sts_policyd.tlsrpt.report import ReportDocument, ReportSettings, build_report
from mta_sts_policyd.tlsrpt.sender import backoff, midnight_after
from mta_sts_policyd.tlsrpt.store.aggregates import utc_day

log = logging.getLogger(__name__)


class StampingTransport(Protocol):
    """NetworkTransport: fixes a mail's bytes once (stamp), then delivers exactly those."""

    def stamp(self, doc: ReportDocument, dest: RuaDestination, date: float) -> Stamp: ...

    async def deliver(
        self, doc: ReportDocument, dest: RuaDestination, stamp: Stamp | None = None
    ) -> None: ...


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
    def __init__(
        self,
        ledger: ReportLedger,
        report: ReportSettings,
        delivery: DeliverySettings,
        transport: StampingTransport,
        *,
        node: str,
        settle: float,
        deadline: float,
        txt_lookup: TxtQuery | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.report = report
        self.delivery = delivery
        self.transport = transport
        self.node = node
        self.settle = settle
        self.deadline = max(deadline, settle)
        self.txt_lookup = txt_lookup
        self.clock = clock
        self.rng = rng or random.Random()
        self.done: set[date] = set()
        """Days whose every report is resolved (or that had nothing to report)."""
        self._unrecorded: dict[tuple[date, str], ReportState] = {}
        """Deliveries whose `sent` could not be written (Redis went away): written later."""
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
            await self._write_unrecorded()
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
        await self._send(dd, name, token)
        await self.ledger.release(dd.day, name, token)

    async def _send(self, dd: DomainDay, name: str, token: int) -> None:
        now = self.clock()
        st = await self.ledger.state(dd.day, name)
        if st is not None and (st.final or (st.state == "retry" and st.due > now)):
            return
        doc = await asyncio.to_thread(build_report, dd, self.report)
        digest = hashlib.sha256(doc.json_bytes).hexdigest()
        takeover = st if st is not None and st.state == "sending" else None
        if takeover is not None:
            log.warning(
                "event=fleet-report-takeover report_id=%s previous_node=%r destination=%s "
                "same_bytes=%s",
                doc.report_id, takeover.node, takeover.destination, takeover.digest == digest,
            )  # fmt: skip
        base = ReportState(
            state="sending",
            token=token,
            node=self.node,
            report_id=doc.report_id,
            digest=digest,
            attempts=(st.attempts if st else 0) + 1,
            first_attempt=st.first_attempt if st and st.first_attempt else now,
            failed=st.failed if st else (),
        )
        try:
            record = await self._record(dd)
        except DnsLookupError as exc:
            await self._unsent(dd.day, name, base, [], f"TLSRPT lookup: {exc}")
            return
        if record is None or not record.destinations:
            await self.ledger.write(dd.day, name, replace(base, state="no-destination"))
            return
        dests = {str(d): d for d in record.destinations}
        if takeover is not None and takeover.destination in dests:  # where it may have arrived
            first = takeover.destination
            dests = {first: dests[first], **{k: v for k, v in dests.items() if k != first}}
        errors: list[str] = []
        failed = list(base.failed)
        for dest_name, dest in dests.items():
            if dest_name in failed:
                continue
            again = takeover is not None and takeover.destination == dest_name
            outcome = await self._one(dd.day, name, base, doc, dest, takeover if again else None)
            if outcome is None:
                return  # accepted, or superseded by a newer holder
            errors.append(f"{dest_name}: {outcome.reason}")
            if not outcome.temporary:
                failed.append(dest_name)
        base = replace(base, failed=tuple(failed))
        await self._unsent(dd.day, name, base, list(dests), "; ".join(errors))

    async def _one(
        self,
        day: date,
        name: str,
        base: ReportState,
        doc: ReportDocument,
        dest: RuaDestination,
        previous: ReportState | None,
    ) -> DeliveryError | None:
        """Send to one destination: None when done (accepted or superseded), else the error."""
        try:
            if previous is not None:  # the same bytes as the attempt that may have arrived
                stamp = Stamp(previous.stamp_date, previous.dkim.encode("latin-1") or None)
            else:
                stamp = await asyncio.to_thread(self.transport.stamp, doc, dest, self.clock())
        except DeliveryError as exc:
            return exc
        sending = replace(
            base,
            destination=str(dest),
            stamp_date=stamp.date,
            dkim=(stamp.dkim_signature or b"").decode("latin-1"),
        )
        await self.ledger.renew(day, name, base.token)
        if not await self.ledger.write(day, name, sending):
            log.info("event=fleet-report-superseded report_id=%s", doc.report_id)
            return None
        try:
            await self.transport.deliver(doc, dest, stamp)
        except DeliveryError as exc:
            _count(dest, delivered=False)
            log.warning(
                "event=tlsrpt-report-failed report_id=%s destination=%s reason=%r",
                doc.report_id, dest, exc.reason,
            )  # fmt: skip
            return exc
        _count(dest, delivered=True)
        metrics.FLEET_REPORTS_SENT.inc()
        if previous is not None:
            metrics.FLEET_POSSIBLE_DUPLICATES.inc()
        log.info(
            "event=tlsrpt-report-delivered report_id=%s destination=%s fleet=yes resent=%s",
            doc.report_id, dest, "yes" if previous is not None else "no",
        )  # fmt: skip
        await self._record_sent(day, name, replace(sending, state="sent"))
        return None

    async def _record_sent(self, day: date, name: str, state: ReportState) -> None:
        try:
            ok = await self.ledger.write(day, name, state)
        except FleetUnavailable:
            self._unrecorded[(day, name)] = state  # written on a later pass (fenced)
            raise
        if not ok:
            log.warning("event=fleet-report-record-refused report_id=%s token=%d",
                        state.report_id, state.token)  # fmt: skip

    async def _write_unrecorded(self) -> None:
        for (day, name), state in list(self._unrecorded.items()):
            await self._record_sent(day, name, state)
            del self._unrecorded[(day, name)]

    async def _unsent(
        self, day: date, name: str, base: ReportState, dests: list[str], error: str
    ) -> None:
        """No destination accepted: give up (all refused for good, or the retry window is
        over; RFC 8460 §5.5) or retry later with exponential back-off."""
        now = self.clock()
        every_failed = bool(dests) and all(d in base.failed for d in dests)
        if every_failed or now >= base.first_attempt + self.delivery.retry_window:
            await self.ledger.write(day, name, replace(base, state="failed", error=error[:500]))
            return
        due = min(now + backoff(base.attempts, self.rng),
                  base.first_attempt + self.delivery.retry_window)  # fmt: skip
        await self.ledger.write(day, name, replace(base, state="retry", due=due, error=error[:500]))

    async def _record(self, dd: DomainDay) -> TlsRptRecord | None:
        """The producer's record text if known (Postfix's `pr`), else a DNS lookup."""
        if dd.tlsrpt_record is not None:
            try:
                return parse_tlsrpt_record(dd.tlsrpt_record)
            except RecordSyntaxError:
                return None
        if self.txt_lookup is None:
            return None
        return await fetch_tlsrpt_record(dd.report_domain, self.txt_lookup)


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


def _count(dest: RuaDestination, *, delivered: bool) -> None:
    transport = "mail" if dest.kind == "mailto" else "https"
    family = metrics.REPORTS_SENT if delivered else metrics.REPORTS_FAILED
    family.labels(transport).inc()
