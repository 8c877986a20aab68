"""The persistent tier of the policy cache: sqlitedict, JSON-encoded, written in batches.

Writes go through sqlitedict (autocommit off, one transaction per batch); reads use a plain
sqlite3 connection (WAL lets them run beside the writer) so they skip sqlitedict's queue
thread, and SQL picks the hot set at start without decoding the whole store. A corrupt file is
moved aside with a clear log line and the daemon starts with an empty cache.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from sqlitedict import SqliteDict

from mta_sts_policyd.errors import StoreError
from mta_sts_policyd.policy.entry import CacheEntry, entry_from_json, entry_to_json

log = logging.getLogger(__name__)

LAST_USED = "json_extract(value, '$.last_used')"
LAST_USED_INDEX = f'CREATE INDEX IF NOT EXISTS "policies_last_used" ON "policies" ({LAST_USED})'
"""Start-up reads the hot set and eviction the oldest rows by this index, not by a full scan."""
CACHE_SIZE_PRAGMA = "PRAGMA cache_size = -1024"
"""1 MiB of page cache per connection (sqlite's default is ~8 MiB): the hot set lives in our
own memory, the OS page cache holds the file, and RSS is the operator's budget."""


class RefreshFacts(NamedTuple):
    """The fields of a stored entry that decide whether a refresh is due (refresh.py)."""

    domain: str
    last_used: float
    fetched_at: float
    failed_at: float
    max_age: int


def _check_sqlite(path: Path) -> None:
    """Raise sqlite3.DatabaseError for a damaged file (before sqlitedict's thread sees it)."""
    conn = sqlite3.connect(path)
    try:
        (result,) = conn.execute("PRAGMA quick_check").fetchone()
        if result != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {result}")
    finally:
        conn.close()


def _encode(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


class PolicyStore:
    """The persistent tier: sqlitedict, JSON-encoded, autocommit off, written in batches."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        """Serialises writes (sqlitedict connection)."""
        self._read_lock = threading.Lock()
        """Serialises reads (plain connection); WAL lets them run beside a write."""
        self._read: sqlite3.Connection | None = None
        self._db = self._open()

    def _open(self) -> SqliteDict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.path.exists():
                _check_sqlite(self.path)
            return self._connect()
        except (sqlite3.DatabaseError, RuntimeError, OSError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{os.getpid()}")
            log.error(
                "event=store-corrupt path=%s moved_to=%s reason=%r starting with an empty cache",
                self.path,
                aside,
                str(exc),
            )
            try:
                self.path.rename(aside)
            except OSError as move_exc:
                raise StoreError(
                    f"{self.path}: corrupt and cannot be moved aside: {move_exc}"
                ) from None
            return self._connect()

    def _connect(self) -> SqliteDict:
        db = SqliteDict(
            str(self.path),
            tablename="policies",
            encode=_encode,
            decode=json.loads,
            autocommit=False,
            journal_mode="WAL",
            outer_stack=False,
        )
        db.conn.execute(CACHE_SIZE_PRAGMA)
        db.conn.execute(LAST_USED_INDEX)
        db.commit()
        return db

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
        """One transaction for a batch of changes; `touched` updates only last_used."""
        with self._lock:
            for entry in entries:
                self._db[entry.domain] = entry_to_json(entry)
            if touched:
                self._db.conn.executemany(
                    "UPDATE \"policies\" SET value = json_set(value, '$.last_used', ?)"
                    " WHERE key = ? AND json_extract(value, '$.last_used') < ?",
                    [(t, domain, t) for domain, t in touched.items()],
                )
            for domain in deletions:
                self._db.conn.execute('DELETE FROM "policies" WHERE key = ?', (domain,))
            self._db.commit()

    def evict_oldest(self, keep: int) -> int:
        """Delete the least recently used rows beyond `keep`; returns how many."""
        excess = len(self) - keep
        if excess <= 0:
            return 0
        with self._lock:
            self._db.conn.execute(
                'DELETE FROM "policies" WHERE key IN '
                f'(SELECT key FROM "policies" ORDER BY {LAST_USED} ASC LIMIT ?)',
                (excess,),
            )
            self._db.commit()
        return excess

    def domains(self) -> Iterator[str]:
        """Every stored domain, streamed (no list of 100k names at start-up)."""
        with self._read_lock:
            cursor = self._reader().execute('SELECT key FROM "policies"')
            while rows := cursor.fetchmany(4096):
                yield from (row[0] for row in rows)

    def __len__(self) -> int:
        with self._read_lock:
            (count,) = self._reader().execute('SELECT count(*) FROM "policies"').fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            if self._read is not None:
                self._read.close()
                self._read = None
