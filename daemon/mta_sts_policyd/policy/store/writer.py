"""sqlitedict's writer thread, with every wait on it bounded.

Why: sqlitedict (2.1.0) runs one thread per file and queues every statement to it. Its
`commit()` waits for the thread's reply without a timeout, and when COMMIT itself fails (a full
disk) the exception escapes the thread's loop: the thread dies and the wait never ends, so the
flush, and with it SIGTERM, hung for good. Here COMMIT goes through the thread as an ordinary
statement (sqlitedict catches statement errors and re-raises them to the caller), each batch
waits for a sentinel row whose wait ends when the thread stops making progress or dies, and any
failure drops the connection (closing it rolls the transaction back) so the next batch starts on
a new one. A failed batch is therefore never half-written, and the caller retries it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

from mta_sts_policyd.errors import StoreError

STALL_TIMEOUT = 10.0
"""Seconds without progress of the writer thread after which a batch counts as failed (one
statement running longer counts as no progress). With the drain and the closing join below,
a SIGTERM ends well inside systemd's TimeoutStopSec=30s of the shipped unit."""
CLOSE_JOIN = 2.0
"""How long a dropped connection may take to roll back before the next one is opened (if it
takes longer, the next batch meets SQLite's busy timeout and is retried later)."""
POLL = 0.05
LAST_USED = "json_extract(value, '$.last_used')"
LAST_USED_INDEX = f'CREATE INDEX IF NOT EXISTS "policies_last_used" ON "policies" ({LAST_USED})'
"""Start-up reads the hot set and eviction the oldest rows by this index, not by a full scan."""
CACHE_SIZE_PRAGMA = "PRAGMA cache_size = -1024"
"""1 MiB of page cache per connection (sqlite's default is ~8 MiB): the hot set lives in our
own memory, the OS page cache holds the file, and RSS is the operator's budget."""

Statement = tuple[str, tuple[Any, ...]]


def _encode(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


class BoundedWriter:
    """The store's one sqlitedict connection; `run` commits a batch or raises StoreError."""

    def __init__(self, path: Path, stall_timeout: float = STALL_TIMEOUT) -> None:
        self.path = path
        self.stall_timeout = stall_timeout
        self._db: SqliteDict | None = None

    def open(self) -> None:
        """Connect (sqlite3/RuntimeError/OSError/StoreError as raised, so the caller can tell
        a damaged file from an unusable one)."""
        db = self._construct()
        self._db = db
        try:
            db.conn.execute(CACHE_SIZE_PRAGMA)
            db.conn.execute(LAST_USED_INDEX)
            self._settle(db)  # DDL outside a transaction commits by itself
        except BaseException:
            self.discard()
            raise

    def _construct(self) -> SqliteDict:
        """SqliteDict(...) in a helper thread: its constructor waits on its own thread without
        a bound (a file that blocks on read would hold a reopen, and the flush, for good)."""
        done: dict[str, Any] = {}

        def connect() -> None:
            try:
                done["db"] = SqliteDict(
                    str(self.path),
                    tablename="policies",
                    encode=_encode,
                    decode=json.loads,
                    autocommit=False,
                    journal_mode="WAL",
                    outer_stack=False,
                )
            except BaseException as exc:
                done["error"] = exc

        helper = threading.Thread(target=connect, name="policy-store-open", daemon=True)
        helper.start()
        helper.join(self.stall_timeout)
        if helper.is_alive():
            raise StoreError(f"{self.path}: no answer opening it for {self.stall_timeout:g} s")
        if "error" in done:
            raise done["error"]
        db: SqliteDict = done["db"]
        return db

    def run(self, statements: Iterable[Statement]) -> None:
        """Execute `statements` and commit them as one transaction."""
        try:
            if self._db is None:
                self.open()
            db = self._db
            assert db is not None
            db.conn.check_raise_error()
            count = 0
            for sql, args in statements:
                db.conn.execute(sql, args)
                count += 1
            if count:
                self._settle(db)  # every statement ran: only then commit
                db.conn.execute("COMMIT")
                self._settle(db)
        except (sqlite3.Error, RuntimeError, OSError) as exc:
            self.discard()
            raise StoreError(f"{self.path}: {exc}") from exc
        except StoreError:
            self.discard()
            raise

    def _settle(self, db: SqliteDict) -> None:
        """Wait until the thread has run everything queued before now; raise its error."""
        conn = db.conn
        replies: queue.Queue[Any] = queue.Queue()
        conn.execute("SELECT 1", None, replies)
        pending, since = -1, time.monotonic()
        while True:
            try:
                replies.get(timeout=POLL)
                break
            except queue.Empty:
                pass
            if not conn.is_alive():
                raise StoreError(f"{self.path}: the store's writer thread has ended")
            backlog = conn.reqs.qsize()
            if backlog != pending:
                pending, since = backlog, time.monotonic()
            elif time.monotonic() - since > self.stall_timeout:
                raise StoreError(
                    f"{self.path}: no progress writing for {self.stall_timeout:g} s "
                    f"({backlog} statements queued)"
                )
        conn.check_raise_error()

    def discard(self) -> None:
        """Drop the connection without waiting on it for longer than the stall bound; an
        uncommitted transaction is rolled back when the thread closes it."""
        db, self._db = self._db, None
        if db is None or db.conn is None:
            return
        thread = db.conn
        with contextlib.suppress(Exception):  # the thread may already be gone
            db.close(do_log=False, force=True)  # queues the close; never waits
        thread.join(min(CLOSE_JOIN, self.stall_timeout))

    close = discard
    """Every batch commits before `run` returns, so nothing is pending at close."""
