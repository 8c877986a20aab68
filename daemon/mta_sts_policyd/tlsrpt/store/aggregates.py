"""Daily TLS-RPT aggregates in SQLite, fed by producers at up to ~10,000 events/s.

`submit()` only appends to a deque (O(1), thread-safe, no disk). A background thread drains the
deque every `flush_interval` seconds, aggregates in memory and commits one transaction, so a
`close()` (SIGTERM path) loses nothing and `kill -9` loses at most one flush window.
Delivery state lives in the same file (schema.py, ledger.py) so sending and counting share one
truth.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from mta_sts_policyd.errors import StoreError
from mta_sts_policyd.state_files import (
    create_private_file,
    is_damaged,
    move_aside,
    quick_check,
    unusable,
)
from mta_sts_policyd.tlsrpt.model import DomainDay, SessionEvent
from mta_sts_policyd.tlsrpt.store import codec, schema

log = logging.getLogger(__name__)

AggKey = tuple[str, str, str, str]  # day, domain, record ('' = unknown), canonical policy


@dataclass(frozen=True, slots=True)
class DayCount:
    """One row of `report list`."""

    day: date
    report_domain: str
    tlsrpt_record: str | None
    policies: int
    successes: int
    failures: int


@dataclass(slots=True)
class _Pending:
    successes: int = 0
    failures: int = 0
    details: dict[str, int] | None = None


class TlsRptStore:
    """The EventSink of the daemon plus the read/delivery-state API of the reporter."""

    def __init__(
        self,
        path: str | Path,
        *,
        flush_interval: float = 1.0,
        retention_days: int = 31,
        max_buffered: int = 1_000_000,
    ) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.retention_days = retention_days
        self.max_buffered = max_buffered
        self.dropped = 0
        """Events refused because the buffer was full (the disk could not keep up)."""
        self.moved_aside: Path | None = None
        self._buffer: deque[SessionEvent] = deque()
        self._pending: dict[AggKey, _Pending] = {}
        self._db_lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._conn = self._open()
        self._thread = threading.Thread(target=self._run, name="tlsrpt-store", daemon=True)
        self._thread.start()

    # -- opening -----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Only a damaged file is moved aside; a full disk, a read-only mount or missing
        permissions are a StateUnusableError naming the cause, and nothing is renamed."""
        try:
            create_private_file(self.path)
            return self._connect()
        except (sqlite3.Error, OSError) as exc:
            if not is_damaged(exc):
                raise unusable(self.path, "open the TLS-RPT store", exc) from None
            damage = exc
        self.moved_aside = move_aside(self.path)
        log.error(
            "event=tlsrpt-store-corrupt path=%s reason=%r moved_to=%s action=start-empty",
            self.path,
            str(damage),
            self.moved_aside,
        )
        try:
            create_private_file(self.path)
            return self._connect()
        except (sqlite3.Error, OSError) as again:
            raise unusable(self.path, "recreate the TLS-RPT store", again) from None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            quick_check(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(schema.SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (schema.SCHEMA_VERSION,)
            )
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Exclusive use of the connection inside one transaction (jobs.py builds on this).

        On failure the transaction is rolled back only if SQLite has not already done so (it
        does on a full disk), and a failing rollback never replaces the error that caused it
        ("cannot rollback - no transaction is active" hid "database or disk is full")."""
        with self._db_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                raise

    # -- ingestion ---------------------------------------------------------------------------

    def submit(self, event: SessionEvent) -> None:
        """O(1), never touches disk; safe from any thread."""
        if len(self._buffer) >= self.max_buffered:
            self.dropped += 1
            return
        self._buffer.append(event)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except StoreError as exc:  # keep the aggregate in memory and try again later
                log.error("event=tlsrpt-store-flush-failed reason=%r", str(exc))

    def flush(self) -> int:
        """Drain the buffer and commit; returns the number of events written."""
        with self._flush_lock:
            n = self._drain()
            if self._pending:
                self._commit()
            return n

    def _drain(self) -> int:
        n = 0
        buf = self._buffer
        while True:
            try:
                event = buf.popleft()
            except IndexError:
                return n
            n += 1
            self._add(event)

    def _add(self, event: SessionEvent) -> None:
        key = codec.agg_key(event)
        slot = self._pending.get(key)
        if slot is None:
            slot = self._pending[key] = _Pending()
        if event.success:
            slot.successes += event.count
        else:
            slot.failures += event.count
        if event.failures:
            if slot.details is None:
                slot.details = {}
            for detail in event.failures:
                dkey = codec.detail_json(detail)
                slot.details[dkey] = slot.details.get(dkey, 0) + event.count

    def _commit(self) -> None:
        try:
            with self.transaction() as conn:
                for (day, domain, record, policy), slot in self._pending.items():
                    (agg_id,) = conn.execute(
                        schema.UPSERT_AGG,
                        (day, domain, record, policy, slot.successes, slot.failures),
                    ).fetchone()
                    for dkey, count in (slot.details or {}).items():
                        conn.execute(schema.UPSERT_DETAIL, (agg_id, dkey, count))
        except sqlite3.Error as exc:
            raise StoreError(f"TLS-RPT store {self.path}: commit failed: {exc}") from exc
        self._pending.clear()

    def close(self) -> None:
        """Stop the writer and flush everything still buffered (the SIGTERM path). A flush
        that fails is logged with what it loses, and the store is closed all the same: the
        daemon's shutdown (and its policy cache flush) must go on."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            self.flush()
        except StoreError as exc:
            log.error(
                "event=tlsrpt-store-close-failed aggregates_lost=%d reason=%r",
                len(self._pending),
                str(exc),
            )
        with self._db_lock:
            self._conn.close()

    def __enter__(self) -> TlsRptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------

    def days(self) -> list[date]:
        with self._db_lock:
            rows = self._conn.execute("SELECT DISTINCT day FROM agg ORDER BY day").fetchall()
        return [date.fromisoformat(r[0]) for r in rows]

    def domain_days(self, day: date, domain: str | None = None) -> list[DomainDay]:
        """One DomainDay per (report domain, TLSRPT record) of `day`, sorted."""
        sql = "SELECT id, domain, record, policy, successes, failures FROM agg WHERE day = ?"
        args: tuple[str, ...] = (day.isoformat(),)
        if domain is not None:
            sql += " AND domain = ?"
            args += (codec.domain_key(domain),)
        with self._db_lock:
            aggs = self._conn.execute(sql + " ORDER BY domain, record, policy", args).fetchall()
            details = {
                agg_id: self._conn.execute(
                    "SELECT detail, count FROM detail WHERE agg_id = ? ORDER BY detail", (agg_id,)
                ).fetchall()
                for agg_id, *_ in aggs
            }
        return codec.group_domain_days(day, aggs, details)

    def counts(self, day: date | None = None) -> list[DayCount]:
        sql = (
            "SELECT day, domain, record, COUNT(*), SUM(successes), SUM(failures) FROM agg "
            "{} GROUP BY day, domain, record ORDER BY day, domain, record"
        )
        where, args = ("", ()) if day is None else ("WHERE day = ?", (day.isoformat(),))
        with self._db_lock:
            rows = self._conn.execute(sql.format(where), args).fetchall()
        return [
            DayCount(date.fromisoformat(d), dom, rec or None, n, s, f)
            for d, dom, rec, n, s, f in rows
        ]

    # -- retention ---------------------------------------------------------------------------

    def prune(self, today: date, keep: Collection[date] = ()) -> list[date]:
        """Delete days older than retention_days unless a report for them is still unresolved
        (a local job, or a day in `keep`: in fleet mode, one the fleet has not yet sent)."""
        cutoff = (today - timedelta(days=self.retention_days)).isoformat()
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT DISTINCT day FROM agg WHERE day < ? AND day NOT IN "
                "(SELECT day FROM job WHERE state = 'scheduled')",
                (cutoff,),
            ).fetchall()
            kept = {d.isoformat() for d in keep}
            days = [r[0] for r in rows if r[0] not in kept]
            for d in days:
                conn.execute(
                    "DELETE FROM detail WHERE agg_id IN (SELECT id FROM agg WHERE day = ?)", (d,)
                )
                for table in ("agg", "job", "destination"):
                    conn.execute(f"DELETE FROM {table} WHERE day = ?", (d,))
        return [date.fromisoformat(d) for d in days]


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def utc_day(timestamp: float) -> date:
    return datetime.fromtimestamp(timestamp, UTC).date()
