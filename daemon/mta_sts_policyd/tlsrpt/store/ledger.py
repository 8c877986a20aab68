"""Persistent delivery state: one job per (day, report domain, TLSRPT record), one row per rua.

Lives in the store's SQLite file. Every state change is its own committed transaction, so a
restart resumes exactly where it stopped: destinations already `sent` are never sent again, a
job's random send time survives restarts, and a day is only pruned once its job is resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    DELIVERED = "delivered"
    """At least one destination accepted the report (RFC 8460 §3)."""
    FAILED = "failed"
    NO_DESTINATION = "no-destination"
    """The domain publishes no (usable) TLSRPT record."""
    EXPIRED = "expired"
    """Older than the catch-up bound when first seen; never sent."""


class DestState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    """Written before the attempt; after a crash it is retried (at-least-once, same report-id)."""
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Job:
    day: date
    report_domain: str
    tlsrpt_record: str | None
    state: JobState
    due: float
    attempts: int = 0
    first_attempt: float | None = None
    report_id: str | None = None
    last_error: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.day.isoformat(), self.report_domain, self.tlsrpt_record or ""


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    destination: str
    state: DestState
    attempts: int
    last_error: str | None


_JOB_COLS = "day, domain, record, state, due, attempts, first_attempt, report_id, last_error"


def _job(row: tuple[str, str, str, str, float, int, float | None, str | None, str | None]) -> Job:
    day, domain, record, state, due, attempts, first, report_id, error = row
    return Job(
        date.fromisoformat(day),
        domain,
        record or None,
        JobState(state),
        due,
        attempts,
        first,
        report_id,
        error,
    )


class JobBook:
    """Delivery-state operations over a TlsRptStore's database."""

    def __init__(self, store: TlsRptStore) -> None:
        self.store = store

    def ensure_jobs(
        self, today: date, oldest: date, due_for: Callable[[date], float], now: float
    ) -> list[Job]:
        """Create jobs for completed days that have none; days before `oldest` are EXPIRED."""
        with self.store.transaction() as conn:
            missing = conn.execute(
                "SELECT DISTINCT day, domain, record FROM agg a WHERE day < ? AND NOT EXISTS "
                "(SELECT 1 FROM job j WHERE j.day = a.day AND j.domain = a.domain "
                "AND j.record = a.record) ORDER BY day, domain, record",
                (today.isoformat(),),
            ).fetchall()
            created = []
            for day_s, domain, record in missing:
                day = date.fromisoformat(day_s)
                state = JobState.SCHEDULED if day >= oldest else JobState.EXPIRED
                job = Job(day, domain, record or None, state, due_for(day))
                conn.execute(
                    "INSERT INTO job(day, domain, record, state, due, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (*job.key, job.state, job.due, now),
                )
                created.append(job)
        return created

    def jobs(self, day: date | None = None, states: tuple[JobState, ...] = ()) -> list[Job]:
        sql, args = f"SELECT {_JOB_COLS} FROM job WHERE 1", []
        if day is not None:
            sql, args = sql + " AND day = ?", [day.isoformat()]
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += [str(s) for s in states]
        with self.store.transaction() as conn:
            rows = conn.execute(sql + " ORDER BY due, day, domain, record", args).fetchall()
        return [_job(r) for r in rows]

    def due(self, now: float) -> list[Job]:
        return [j for j in self.jobs(states=(JobState.SCHEDULED,)) if j.due <= now]

    def next_due(self) -> float | None:
        with self.store.transaction() as conn:
            row = conn.execute("SELECT MIN(due) FROM job WHERE state = 'scheduled'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def get(self, day: date, domain: str, record: str | None) -> Job | None:
        with self.store.transaction() as conn:
            row = conn.execute(
                f"SELECT {_JOB_COLS} FROM job WHERE day = ? AND domain = ? AND record = ?",
                (day.isoformat(), domain, record or ""),
            ).fetchone()
        return None if row is None else _job(row)

    def create(self, job: Job, now: float) -> None:
        """Insert a job if missing (used by `report send` for days the scheduler has not seen)."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO job(day, domain, record, state, due, updated) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (*job.key, job.state, job.due, now),
            )

    def start_attempt(self, job: Job, report_id: str, now: float) -> Job:
        """Count the attempt; the first one starts the retry window."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE job SET attempts = attempts + 1, first_attempt = "
                "COALESCE(first_attempt, ?), report_id = ?, updated = ? "
                "WHERE day = ? AND domain = ? AND record = ?",
                (now, report_id, now, *job.key),
            )
            row = conn.execute(
                f"SELECT {_JOB_COLS} FROM job WHERE day = ? AND domain = ? AND record = ?", job.key
            ).fetchone()
        return _job(row)

    def add_destinations(self, job: Job, destinations: list[str], now: float) -> None:
        """Register destinations; existing rows keep their state (a sent one stays sent)."""
        with self.store.transaction() as conn:
            for dest in destinations:
                conn.execute(
                    "INSERT OR IGNORE INTO destination(day, domain, record, destination, state, "
                    "updated) VALUES (?, ?, ?, ?, 'pending', ?)",
                    (*job.key, dest, now),
                )

    def destinations(self, job: Job) -> list[DestinationStatus]:
        with self.store.transaction() as conn:
            rows = conn.execute(
                "SELECT destination, state, attempts, last_error FROM destination "
                "WHERE day = ? AND domain = ? AND record = ? ORDER BY destination",
                job.key,
            ).fetchall()
        return [DestinationStatus(d, DestState(s), a, e) for d, s, a, e in rows]

    def mark(
        self, job: Job, dest: str, state: DestState, now: float, error: str | None = None
    ) -> None:
        bump = 1 if state == DestState.SENDING else 0
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE destination SET state = ?, attempts = attempts + ?, "
                "last_error = COALESCE(?, last_error), updated = ? "
                "WHERE day = ? AND domain = ? AND record = ? AND destination = ?",
                (state, bump, error, now, *job.key, dest),
            )

    def finish(self, job: Job, state: JobState, now: float, error: str | None = None) -> None:
        """Resolve a job; destinations still open are closed as failed."""
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE job SET state = ?, last_error = ?, updated = ? "
                "WHERE day = ? AND domain = ? AND record = ?",
                (state, error, now, *job.key),
            )
            conn.execute(
                "UPDATE destination SET state = 'failed', updated = ? WHERE day = ? AND "
                "domain = ? AND record = ? AND state IN ('pending', 'sending')",
                (now, *job.key),
            )

    def reschedule(self, job: Job, due: float, now: float, error: str | None) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE job SET due = ?, last_error = ?, updated = ? "
                "WHERE day = ? AND domain = ? AND record = ?",
                (due, error, now, *job.key),
            )
