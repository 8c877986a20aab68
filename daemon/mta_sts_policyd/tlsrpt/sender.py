"""The daily sender: after 00:00 UTC + random delay, send yesterday's reports; retry for 24 h.

Clock and RNG are injected. All state is in the store (jobs.py), so a restart neither forgets
a day nor re-sends a destination that already accepted; missed days are caught up (bounded by
`catch_up_days`), unlike sys4's yesterday-only model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from mta_sts_policyd import metrics
from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.tlsrpt.deliver import DeliveryError, DeliverySettings, Transport
from mta_sts_policyd.tlsrpt.record import RuaDestination, TxtQuery, report_record
from mta_sts_policyd.tlsrpt.report import ReportDocument, ReportSettings, build_report
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore, utc_day
from mta_sts_policyd.tlsrpt.store.ledger import DestState, Job, JobBook, JobState

log = logging.getLogger(__name__)

BACKOFF_BASE = 300.0
BACKOFF_MAX = 4 * 3600.0
MAX_SLEEP = 300.0


def backoff(attempts: int, rng: random.Random) -> float:
    """5 min, 10 min, 20 min ... capped at 4 h, +0-10 % jitter (RFC 8460 §5.5: exponential)."""
    delay: float = min(BACKOFF_BASE * 2.0 ** max(attempts - 1, 0), BACKOFF_MAX)
    return delay * (1 + rng.uniform(0, 0.1))


def midnight_after(day: date) -> float:
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).timestamp()


def day_ended(day: date, now: float) -> bool:
    """A UTC day's report may go out only after it (RFC 8460 §4.1: the report covers the whole
    period, and its mail's Date must not precede the period's end)."""
    return now >= midnight_after(day)


class ReportSender:
    def __init__(
        self,
        store: TlsRptStore,
        report: ReportSettings,
        delivery: DeliverySettings,
        transport: Transport,
        *,
        txt_lookup: TxtQuery | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.book = JobBook(store)
        self.report = report
        self.delivery = delivery
        self.transport = transport
        self.txt_lookup = txt_lookup
        self.clock = clock
        self.rng = rng or random.Random()

    def _due_for(self, day: date) -> float:
        """RFC 8460 §4.1: never before the end of the day; spread over send_delay_max."""
        first = midnight_after(day) + self.rng.uniform(0, self.delivery.send_delay_max)
        return max(first, self.clock())

    async def tick(self) -> float | None:
        """One pass: create jobs for finished days, run due ones, prune. Returns next due time."""
        now = self.clock()
        today = utc_day(now)
        await asyncio.to_thread(self.store.flush)
        oldest = today - timedelta(days=self.delivery.catch_up_days)
        await asyncio.to_thread(self.book.ensure_jobs, today, oldest, self._due_for, now)
        for job in await asyncio.to_thread(self.book.due, now):
            await self.attempt(job)
        await asyncio.to_thread(self.store.prune, today)
        return await asyncio.to_thread(self.book.next_due)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set; wakes at the next due job (at most every MAX_SLEEP s)."""
        while not stop.is_set():
            try:
                nxt = await self.tick()
            except Exception:  # a broken tick must not end reporting for good
                log.exception("event=tlsrpt-sender-pass-failed")
                nxt = None
            wait = MAX_SLEEP if nxt is None else min(max(nxt - self.clock(), 1.0), MAX_SLEEP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    def document(self, job: Job) -> ReportDocument | None:
        for dd in self.store.domain_days(job.day, job.report_domain):
            if (dd.tlsrpt_record or None) == job.tlsrpt_record:
                return build_report(dd, self.report)
        return None

    async def attempt(self, job: Job) -> JobState:
        """Try the open destinations in record order; resolve or reschedule the job."""
        now = self.clock()
        doc = await asyncio.to_thread(self.document, job)
        if doc is None:
            await asyncio.to_thread(self.book.finish, job, JobState.FAILED, now, "no data")
            return JobState.FAILED
        job = await asyncio.to_thread(self.book.start_attempt, job, doc.report_id, now)
        try:
            record = await report_record(job.tlsrpt_record, job.report_domain, self.txt_lookup)
        except DnsLookupError as exc:
            return await self._retry(job, now, f"TLSRPT lookup: {exc}")
        if record is None or not record.destinations:
            await asyncio.to_thread(self.book.finish, job, JobState.NO_DESTINATION, now)
            return JobState.NO_DESTINATION
        for bad in record.unsupported:
            log.info("event=tlsrpt-rua-ignored domain=%s rua=%r", job.report_domain, bad)
        dests = {str(d): d for d in record.destinations}
        await asyncio.to_thread(self.book.add_destinations, job, list(dests), now)
        return await self._send_all(job, doc, dests)

    async def _send_all(
        self, job: Job, doc: ReportDocument, dests: dict[str, RuaDestination]
    ) -> JobState:
        status = {
            s.destination: s.state for s in await asyncio.to_thread(self.book.destinations, job)
        }
        if DestState.SENT in status.values():  # crashed after a success: never send twice
            await asyncio.to_thread(self.book.finish, job, JobState.DELIVERED, self.clock())
            return JobState.DELIVERED
        errors: list[str] = []
        for name, dest in dests.items():
            if status.get(name) not in (DestState.PENDING, DestState.SENDING):
                continue
            await asyncio.to_thread(self.book.mark, job, name, DestState.SENDING, self.clock())
            try:
                await self.transport.deliver(doc, dest)
            except DeliveryError as exc:
                count_delivery(dest, delivered=False)
                state = DestState.PENDING if exc.temporary else DestState.FAILED
                await asyncio.to_thread(self.book.mark, job, name, state, self.clock(), exc.reason)
                errors.append(f"{name}: {exc.reason}")
                log.warning(
                    "event=tlsrpt-report-failed report_id=%s destination=%s reason=%r",
                    doc.report_id,
                    name,
                    exc.reason,
                )
                continue
            count_delivery(dest, delivered=True)
            await asyncio.to_thread(self.book.mark, job, name, DestState.SENT, self.clock())
            log.info(
                "event=tlsrpt-report-delivered report_id=%s destination=%s", doc.report_id, name
            )
            # RFC 8460 §3: one accepting destination is enough; finish() closes the others.
            await asyncio.to_thread(self.book.finish, job, JobState.DELIVERED, self.clock())
            return JobState.DELIVERED
        left = await asyncio.to_thread(self.book.destinations, job)
        if all(s.state == DestState.FAILED for s in left if s.destination in dests):
            error = "; ".join(errors) or "all destinations failed"
            await asyncio.to_thread(self.book.finish, job, JobState.FAILED, self.clock(), error)
            return JobState.FAILED
        return await self._retry(job, self.clock(), "; ".join(errors))

    async def _retry(self, job: Job, now: float, error: str) -> JobState:
        """Exponential back-off, never past first attempt + retry_window (RFC 8460 §5.5)."""
        first = job.first_attempt if job.first_attempt is not None else now
        end = first + self.delivery.retry_window
        if now >= end:
            await asyncio.to_thread(self.book.finish, job, JobState.FAILED, now, error)
            return JobState.FAILED
        due = min(now + backoff(max(job.attempts, 1), self.rng), end)
        await asyncio.to_thread(self.book.reschedule, job, due, now, error)
        return JobState.SCHEDULED


def count_delivery(dest: RuaDestination, *, delivered: bool) -> None:
    """Reports sent / failed by transport (metrics; mail or https)."""
    transport = "mail" if dest.kind == "mailto" else "https"
    family = metrics.REPORTS_SENT if delivered else metrics.REPORTS_FAILED
    family.labels(transport).inc()
