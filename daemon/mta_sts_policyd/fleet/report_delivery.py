"""One fleet report under its lease: build, send to the record's destinations in order, and
record each step in Redis with the lease's fencing token (report_ledger.py).

Before a report is handed to a destination its state says `sending`, with the mail's Date and
DKIM-Signature header. A node that dies before recording `sent` leaves that state; whoever
takes the report over after the lease expires sends the same bytes to the same destination
(the only way a receiver can get a report twice) and counts it (fleet_possible_duplicates).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from typing import Protocol

from mta_sts_policyd import metrics
from mta_sts_policyd.errors import DnsLookupError, FleetUnavailable
from mta_sts_policyd.fleet.report_ledger import ReportLedger, ReportState
from mta_sts_policyd.tlsrpt.deliver import DeliveryError, DeliverySettings, Stamp
from mta_sts_policyd.tlsrpt.model import DomainDay
from mta_sts_policyd.tlsrpt.record import RuaDestination, TxtQuery, report_record
from mta_sts_policyd.tlsrpt.report import ReportDocument, ReportSettings, build_report
from mta_sts_policyd.tlsrpt.sender import backoff, count_delivery

log = logging.getLogger(__name__)


class StampingTransport(Protocol):
    """NetworkTransport: fixes a mail's bytes once (stamp), then delivers exactly those."""

    def stamp(self, doc: ReportDocument, dest: RuaDestination, date: float) -> Stamp: ...

    async def deliver(
        self, doc: ReportDocument, dest: RuaDestination, stamp: Stamp | None = None
    ) -> None: ...


class ReportDelivery:
    def __init__(
        self,
        ledger: ReportLedger,
        report: ReportSettings,
        delivery: DeliverySettings,
        transport: StampingTransport,
        *,
        node: str,
        txt_lookup: TxtQuery | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.report = report
        self.delivery = delivery
        self.transport = transport
        self.node = node
        self.txt_lookup = txt_lookup
        self.clock = clock
        self.rng = rng or random.Random()
        self.unrecorded: dict[tuple[date, str], ReportState] = {}
        """Deliveries whose `sent` could not be written (Redis went away): written later."""

    async def send(self, dd: DomainDay, name: str, token: int) -> None:
        """Send one report under the lease `token` holds, and record the outcome (fenced)."""
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
            record = await report_record(dd.tlsrpt_record, dd.report_domain, self.txt_lookup)
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
        if not await self.ledger.renew(day, name, base.token):
            log.info("event=fleet-report-lease-lost report_id=%s", doc.report_id)
            return None  # another node may hold it now: leave the report to the holder
        if not await self.ledger.write(day, name, sending):
            log.info("event=fleet-report-superseded report_id=%s", doc.report_id)
            return None
        try:
            await self.transport.deliver(doc, dest, stamp)
        except DeliveryError as exc:
            count_delivery(dest, delivered=False)
            log.warning(
                "event=tlsrpt-report-failed report_id=%s destination=%s reason=%r",
                doc.report_id, dest, exc.reason,
            )  # fmt: skip
            return exc
        count_delivery(dest, delivered=True)
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
            self.unrecorded[(day, name)] = state  # written on a later pass (fenced)
            raise
        if not ok:
            log.warning("event=fleet-report-record-refused report_id=%s token=%d",
                        state.report_id, state.token)  # fmt: skip

    async def write_unrecorded(self) -> None:
        """The `sent` records a Redis failure kept back, written first on the next pass."""
        for (day, name), state in list(self.unrecorded.items()):
            await self._record_sent(day, name, state)
            del self.unrecorded[(day, name)]

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
