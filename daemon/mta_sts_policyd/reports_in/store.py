"""Received TLS reports in SQLite (WAL): per policy domain, UTC day, organisation and policy.

Idempotent: a report is keyed by (organisation, report-id), so the same report delivered twice
(mail retried, pipe and Maildir both fed) counts once. sqlite3 errors become StoreError here
and nowhere else; the caller decides whether that is "try again later" (the pipe's 75). What
waiting cannot mend (a state directory that is a file, a store that cannot be read, a damaged
file) is the StateUnusableError subclass, naming the path, so a command that only reads can say
so instead of "try again later" or "no reports yet". A damaged file is said one way for every
command (`damaged_store`) and left where it is: the operator moves it aside.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

from mta_sts_policyd.errors import StateUnusableError, StoreError
from mta_sts_policyd.reports_in.model import CountedDays, FailureDay, PolicyDay, ReceivedReport
from mta_sts_policyd.state_files import (
    create_private_file,
    is_damaged,
    refuse_non_directory,
    unusable,
)

_READING = "read the received reports"
_WAIT_CODES = (5, 6)
"""SQLITE_BUSY, SQLITE_LOCKED: a writer holds the file; the only read failures that waiting
can mend."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    organization TEXT NOT NULL, report_id TEXT NOT NULL, contact TEXT NOT NULL,
    start TEXT NOT NULL, end TEXT NOT NULL, day TEXT NOT NULL,
    source TEXT NOT NULL, received_at REAL NOT NULL,
    PRIMARY KEY (organization, report_id)
);
CREATE TABLE IF NOT EXISTS policies (
    organization TEXT NOT NULL, report_id TEXT NOT NULL, day TEXT NOT NULL,
    domain TEXT NOT NULL, policy_type TEXT NOT NULL, policy_hash TEXT NOT NULL,
    mode TEXT, policy_text TEXT NOT NULL, successes INTEGER NOT NULL, failures INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS policies_by_domain ON policies (domain, day);
CREATE TABLE IF NOT EXISTS failures (
    organization TEXT NOT NULL, report_id TEXT NOT NULL, day TEXT NOT NULL,
    domain TEXT NOT NULL, policy_hash TEXT NOT NULL, result_type TEXT NOT NULL,
    receiving_mx TEXT, receiving_ip TEXT, sending_ip TEXT, reason_code TEXT,
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_by_domain ON failures (domain, day);
"""


class ReportsInStore:
    """One SQLite file in the state directory; every method is one short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            create_private_file(path)
            # One thread at a time, not always the opening one (the host's intake worker).
            self._db = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if is_damaged(exc):
                raise damaged_store(path, exc) from None
            raise StoreError(f"cannot open {path}: {exc}") from None

    @classmethod
    def reader(cls, path: Path) -> ReportsInStore | None:
        """The store opened read-only, or None when no report was ever taken in: a command
        that only reads (run as root, say) must not create the daemon's files or change them.
        StateUnusableError when the state directory or the file cannot be used: that is not
        "no reports yet"."""
        refuse_non_directory(path.parent, "use the state directory")
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:  # a folder on the way that cannot be searched
            raise unusable(path, _READING, exc) from None
        if not stat.S_ISREG(info.st_mode):
            raise unusable(path, _READING, OSError(errno.EISDIR, "it is not a regular file"))
        if info.st_size == 0:  # the intake's first open, before its tables are written
            return None
        store = cls.__new__(cls)
        store.path = path
        try:
            store._db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10.0)
            store._db.execute("SELECT 1 FROM policies LIMIT 1")
        except sqlite3.Error as exc:
            raise store._read_error(exc, "cannot read ") from None
        return store

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if is_damaged(exc):
                raise damaged_store(self.path, exc) from None
            raise StoreError(f"{self.path}: {exc}") from None

    def add(self, report: ReceivedReport, source: str, received_at: float) -> bool:
        """Store the report; False (and nothing changed) when it was stored before."""
        day = report.day.isoformat()
        key = (report.organization, report.report_id)
        with self._transaction() as db:
            seen = db.execute(
                "SELECT 1 FROM reports WHERE organization = ? AND report_id = ?", key
            ).fetchone()
            if seen:
                return False
            db.execute(
                "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *key,
                    report.contact,
                    report.start.isoformat(),
                    report.end.isoformat(),
                    day,
                    source,
                    received_at,
                ),
            )
            for p in report.policies:
                db.execute(
                    "INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        *key,
                        day,
                        p.policy_domain,
                        p.policy_type,
                        p.policy_hash,
                        p.mode,
                        "\n".join(p.policy_strings),
                        p.successes,
                        p.failures,
                    ),
                )
                db.executemany(
                    "INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            *key,
                            day,
                            p.policy_domain,
                            p.policy_hash,
                            f.result_type,
                            f.receiving_mx,
                            f.receiving_ip,
                            f.sending_ip,
                            f.reason_code,
                            f.count,
                        )
                        for f in p.details
                    ],
                )
        return True

    def policy_days(
        self, domain: str, since: date, *, now: datetime | None = None
    ) -> list[PolicyDay]:
        """What each organisation reported per day from `since`; with `now`, without the
        reports whose range starts after it (`_started`)."""
        started, after = _started(now)
        rows = self._read(
            "SELECT day, organization, policy_type, policy_hash, mode, policy_text,"
            " SUM(successes), SUM(failures) FROM policies WHERE domain = ? AND day >= ?"
            f"{started} GROUP BY day, organization, policy_type, policy_hash"
            " ORDER BY day, organization",
            (domain, since.isoformat(), *after),
        )
        return [
            PolicyDay(
                date.fromisoformat(str(r[0])),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                None if r[4] is None else str(r[4]),
                str(r[5]),
                int(str(r[6])),
                int(str(r[7])),
            )
            for r in rows
        ]

    def failure_days(
        self, domain: str, since: date, *, now: datetime | None = None
    ) -> list[FailureDay]:
        """The failures reported per day from `since`; `now` as for `policy_days`."""
        started, after = _started(now, "failures")
        rows = self._read(
            "SELECT day, organization, policy_hash, result_type, receiving_mx, SUM(count)"
            f" FROM failures WHERE domain = ? AND day >= ?{started}"
            " GROUP BY day, organization, policy_hash, result_type, receiving_mx"
            " ORDER BY day, organization",
            (domain, since.isoformat(), *after),
        )
        return [
            FailureDay(
                date.fromisoformat(str(r[0])),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                None if r[4] is None else str(r[4]),
                int(str(r[5])),
            )
            for r in rows
        ]

    def counted_days(self, domain: str, since: date, now: datetime) -> CountedDays:
        """Policy and failure days from `since` as of `now`, with the count left out."""
        return CountedDays(
            self.policy_days(domain, since, now=now),
            self.failure_days(domain, since, now=now),
            self.reports_starting_after(domain, now),
        )

    def reports_starting_after(self, domain: str, now: datetime) -> int:
        """How many reports about `domain` the `now` of `policy_days` leaves out."""
        rows = self._read(
            "SELECT COUNT(*) FROM reports WHERE start > ? AND EXISTS (SELECT 1 FROM policies"
            " WHERE policies.organization = reports.organization"
            " AND policies.report_id = reports.report_id AND policies.domain = ?)",
            (_stored_time(now), domain),
        )
        return int(str(rows[0][0]))

    def domains(self) -> list[str]:
        return [
            str(r[0]) for r in self._read("SELECT DISTINCT domain FROM policies ORDER BY 1", ())
        ]

    def prune(self, before: date) -> int:
        """Forget reports of days before `before` (the retention); how many went."""
        cutoff = (before.isoformat(),)
        with self._transaction() as db:
            db.execute("DELETE FROM policies WHERE day < ?", cutoff)
            db.execute("DELETE FROM failures WHERE day < ?", cutoff)
            return db.execute("DELETE FROM reports WHERE day < ?", cutoff).rowcount

    def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._read_error(exc) from None

    def _read_error(self, exc: sqlite3.Error, prefix: str = "") -> StoreError:
        """StoreError when a writer holds the file (try again), else StateUnusableError naming
        the file: damaged, not readable, or not this store (no `policies` table)."""
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _WAIT_CODES:
            return StoreError(f"{prefix}{self.path}: {exc}")
        if is_damaged(exc):
            return damaged_store(self.path, exc)
        if not os.access(self.path, os.R_OK):
            return StateUnusableError(
                f"{self.path}: cannot {_READING}: not readable by uid {os.geteuid()} ({exc})"
            )
        return unusable(self.path, _READING, exc)


def damaged_store(path: Path, exc: BaseException) -> StateUnusableError:
    """What every reports-in command says of a damaged store (garbage, a truncated file): the
    file, that waiting does not mend it, and the way out. Nothing is renamed here: the intake
    keeps deferring the reports (exit 75, none lost) until the operator moves the file."""
    return StateUnusableError(
        f"{path}: not a readable report store, the file is damaged ({exc}); move it aside"
        " (with its -wal and -shm files, if any) and the next report received creates a new one"
    )


def _started(now: datetime | None, table: str = "policies") -> tuple[str, tuple[str, ...]]:
    """The SQL condition (and its argument) that leaves out rows of reports whose range starts
    after `now`: the intake refuses future dates, but reports stored before it did would count
    days that have not happened (a `readiness` READY from reports about 2030)."""
    if now is None:
        return "", ()
    condition = (
        " AND NOT EXISTS (SELECT 1 FROM reports WHERE reports.start > ?"
        f" AND reports.organization = {table}.organization"
        f" AND reports.report_id = {table}.report_id)"
    )
    return condition, (_stored_time(now),)


def _stored_time(moment: datetime) -> str:
    """`moment` as `add` stores a range's start (ISO 8601 in UTC), so the text compares in time
    order with the stored ones."""
    return moment.astimezone(UTC).isoformat()
