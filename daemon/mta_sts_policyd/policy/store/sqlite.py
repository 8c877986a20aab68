"""The persistent tier of the policy cache: sqlitedict, JSON-encoded, written in batches.

Writes go through sqlitedict (autocommit off, one transaction per batch, every wait bounded:
writer.py); reads use a plain sqlite3 connection (WAL lets them run beside the writer) so they
skip sqlitedict's queue thread, and SQL picks the hot set at start without decoding the whole
store. Only a damaged file (state_files.is_damaged) is moved aside, with a clear log line, and
the daemon starts with an empty cache; a full disk, a read-only mount or missing permissions
stop the start with one line naming the cause, and nothing is renamed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from mta_sts_policyd.errors import StoreError
from mta_sts_policyd.policy.entry import CacheEntry, entry_from_json, entry_to_json
from mta_sts_policyd.policy.store.writer import (
    CACHE_SIZE_PRAGMA,
    LAST_USED,
    STALL_TIMEOUT,
    BoundedWriter,
    Statement,
)
from mta_sts_policyd.state_files import (
    create_private_file,
    is_damaged,
    make_private_dir,
    move_aside,
    quick_check,
    unusable,
)

log = logging.getLogger(__name__)

_REPLACE = 'REPLACE INTO "policies" (key, value) VALUES (?, ?)'
_TOUCH = (
    "UPDATE \"policies\" SET value = json_set(value, '$.last_used', ?)"
    " WHERE key = ? AND json_extract(value, '$.last_used') < ?"
)
_DELETE = 'DELETE FROM "policies" WHERE key = ?'
_OPEN_ERRORS = (sqlite3.Error, RuntimeError, OSError, StoreError)
_CHUNK = 500
"""Names per `IN (...)` query (SQLite allows 999 parameters in older builds)."""


class RefreshFacts(NamedTuple):
    """The fields of a stored entry that decide whether a refresh is due (refresh.py)."""

    domain: str
    last_used: float
    fetched_at: float
    failed_at: float
    max_age: int


def _check_sqlite(path: Path) -> None:
    """Raise for a damaged file before sqlitedict's thread sees it (state_files.is_damaged)."""
    conn = sqlite3.connect(path)
    try:
        quick_check(conn)
    finally:
        conn.close()


def _encode(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


class PolicyStore:
    """The persistent tier: sqlitedict, JSON-encoded, autocommit off, written in batches."""

    def __init__(self, path: Path, *, stall_timeout: float = STALL_TIMEOUT) -> None:
        self.path = path
        self._lock = threading.Lock()
        """Serialises writes (sqlitedict connection)."""
        self._read_lock = threading.Lock()
        """Serialises reads (plain connection); WAL lets them run beside a write."""
        self._read: sqlite3.Connection | None = None
        self._writer = BoundedWriter(path, stall_timeout)
        self._open()

    def _open(self) -> None:
        make_private_dir(self.path.parent)
        try:
            create_private_file(self.path)
            _check_sqlite(self.path)
            self._writer.open()
            return
        except _OPEN_ERRORS as exc:
            if not is_damaged(exc):
                raise unusable(self.path, "open the policy store", exc) from None
            self._move_aside(exc)
        try:
            create_private_file(self.path)
            self._writer.open()
        except _OPEN_ERRORS as exc:
            raise unusable(self.path, "create the policy store", exc) from None

    def _move_aside(self, damage: BaseException) -> None:
        try:
            aside = move_aside(self.path)
        except OSError as exc:
            raise unusable(self.path, "move the damaged policy store aside", exc) from None
        log.error(
            "event=store-corrupt path=%s moved_to=%s reason=%r starting with an empty cache",
            self.path,
            aside,
            str(damage),
        )

    def _reader(self) -> sqlite3.Connection:
        """A plain read connection: reads skip sqlitedict's queue thread (WAL: no blocking)."""
        if self._read is None:
            self._read = sqlite3.connect(self.path, check_same_thread=False)
            self._read.execute(CACHE_SIZE_PRAGMA)
        return self._read

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[str, str]]:
        with self._read_lock:
            return list(self._reader().execute(sql, args))

    def load_recent(self, limit: int) -> Iterator[CacheEntry]:
        """The `limit` most recently used entries, newest first; bad rows are logged, skipped."""
        rows = self._rows(
            f'SELECT key, value FROM "policies" ORDER BY {LAST_USED} DESC LIMIT ?',
            (limit,),
        )
        for domain, raw in rows:
            try:
                yield entry_from_json(domain, json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("event=store-row-skipped domain=%s reason=%r", domain, str(exc))

    def refresh_candidates(
        self, since: float, now: float, interval: float
    ) -> Iterator[RefreshFacts]:
        """Stored policies used at or after `since` and fetched long enough ago that a refresh
        may be due (older than `interval`, or than 3/4 of a shorter max_age); the caller
        applies the exact rule. Streamed through the last_used index and filtered in SQLite, so
        a pass over a large store neither decodes nor holds its entries."""
        max_age = "json_extract(value, '$.policy.max_age')"
        sql = (
            f"SELECT key, {LAST_USED}, json_extract(value, '$.fetched_at'),"
            f" json_extract(value, '$.failed_at'), {max_age}"
            f' FROM "policies" WHERE {LAST_USED} >= ?'
            f" AND json_extract(value, '$.fetched_at') <= ? - min(?, 0.75 * {max_age})"
        )
        with self._read_lock:
            cursor = self._reader().execute(sql, (since, now, interval))
            while rows := cursor.fetchmany(4096):
                for domain, last_used, fetched_at, failed_at, max_age_s in rows:
                    if isinstance(max_age_s, int) and None not in (
                        last_used,
                        fetched_at,
                        failed_at,
                    ):
                        yield RefreshFacts(domain, last_used, fetched_at, failed_at, max_age_s)

    def get(self, domain: str) -> CacheEntry | None:
        rows = self._rows('SELECT key, value FROM "policies" WHERE key = ?', (domain,))
        if not rows:
            return None
        try:
            return entry_from_json(domain, json.loads(rows[0][1]))
        except (ValueError, KeyError, TypeError):
            return None

    def write(
        self,
        entries: list[CacheEntry],
        deletions: list[str],
        touched: dict[str, float] | None = None,
    ) -> None:
        """One transaction for a batch of changes; `touched` updates only last_used.
        StoreError when it cannot be written (nothing of it is then committed)."""

        def statements() -> Iterator[Statement]:
            for entry in entries:
                yield _REPLACE, (entry.domain, _encode(entry_to_json(entry)))
            for domain, t in (touched or {}).items():
                yield _TOUCH, (t, domain, t)
            for domain in deletions:
                yield _DELETE, (domain,)

        with self._lock:
            self._writer.run(statements())

    def evict_oldest(self, keep: int) -> int:
        """Delete the least recently used rows beyond `keep`; returns how many."""
        excess = len(self) - keep
        if excess <= 0:
            return 0
        sql = (
            'DELETE FROM "policies" WHERE key IN '
            f'(SELECT key FROM "policies" ORDER BY {LAST_USED} ASC LIMIT ?)'
        )
        with self._lock:
            self._writer.run([(sql, (excess,))])
        return excess

    def domains(self) -> Iterator[str]:
        """Every stored domain, streamed (no list of 100k names at start-up)."""
        with self._read_lock:
            cursor = self._reader().execute('SELECT key FROM "policies"')
            while rows := cursor.fetchmany(4096):
                yield from (row[0] for row in rows)

    def count_of(self, domains: Collection[str]) -> int:
        """How many of `domains` the store holds (asked in chunks: SQLite's parameter limit)."""
        names, count = list(domains), 0
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            sql = f'SELECT count(*) FROM "policies" WHERE key IN ({",".join("?" * len(chunk))})'
            with self._read_lock:
                (found,) = self._reader().execute(sql, chunk).fetchone()
            count += int(found)
        return count

    def __len__(self) -> int:
        with self._read_lock:
            (count,) = self._reader().execute('SELECT count(*) FROM "policies"').fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._writer.close()
            if self._read is not None:
                self._read.close()
                self._read = None
