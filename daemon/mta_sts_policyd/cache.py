"""Policy cache: a bounded in-memory hot set over a persistent sqlitedict store.

Why two tiers: 100k cached policies as Python objects cost more memory than the whole daemon may
use (RSS target 60 MB), while an MTA looks up a far smaller working set. The hot set (LRU,
`memory_entries`) answers from memory; entries only on disk are read off the event loop and
promoted. Writes are batched (write-behind) and flushed every `flush_interval` and at shutdown.
Values are JSON (never pickle). A corrupt store is moved aside and the daemon starts empty.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

from mta_sts_policyd.errors import ResultType, StoreError
from mta_sts_policyd.sts.model import Mode, Policy

log = logging.getLogger(__name__)

STORE_FORMAT = 1


@dataclass(slots=True, eq=False)
class CacheEntry:
    """What the daemon knows about one policy domain (RFC 8461 §5.1 state)."""

    domain: str
    policy_id: str | None = None
    policy: Policy | None = None
    fetched_at: float = 0.0
    """Last successful HTTPS fetch; the lifetime counts from here (A38)."""
    expires_at: float = 0.0
    txt_checked_at: float = 0.0
    last_used: float = 0.0
    failed_id: str | None = None
    failed_at: float = 0.0
    failure: tuple[ResultType, str] | None = None
    """The discovery failure in force (cleared by the next success); TLS-RPT, `cache show`."""
    mx_hosts: tuple[str, ...] = ()
    dane: bool = False
    """An MX host has DNSSEC-validated TLSA records (RFC 8461 §2: DANE takes precedence)."""
    reply: bytes = field(default=b"", repr=False)
    """Precomputed socketmap reply payload; rendered when the policy or MX set changes."""

    def valid(self, now: float) -> bool:
        return self.policy is not None and now < self.expires_at


def entry_to_json(entry: CacheEntry) -> dict[str, Any]:
    policy = entry.policy
    return {
        "v": STORE_FORMAT,
        "id": entry.policy_id,
        "policy": None
        if policy is None
        else {
            "mode": policy.mode.value,
            "max_age": policy.max_age,
            "mx": list(policy.mx),
            "lines": list(policy.lines),
        },
        "fetched_at": entry.fetched_at,
        "expires_at": entry.expires_at,
        "txt_checked_at": entry.txt_checked_at,
        "last_used": entry.last_used,
        "failed_id": entry.failed_id,
        "failed_at": entry.failed_at,
        "failure": None if entry.failure is None else [entry.failure[0].value, entry.failure[1]],
        "mx_hosts": list(entry.mx_hosts),
        "dane": entry.dane,
    }


def entry_from_json(domain: str, data: dict[str, Any]) -> CacheEntry:
    """Rebuild an entry; raise ValueError/KeyError/TypeError on anything malformed."""
    if data.get("v") != STORE_FORMAT:
        raise ValueError(f"unknown store format {data.get('v')!r}")
    raw = data["policy"]
    policy = None
    if raw is not None:
        policy = Policy(
            mode=Mode(raw["mode"]),
            max_age=int(raw["max_age"]),
            mx=tuple(str(m) for m in raw["mx"]),
            lines=tuple(sys.intern(str(line)) for line in raw["lines"]),
        )
    failure = data["failure"]
    return CacheEntry(
        domain=domain,
        policy_id=data["id"],
        policy=policy,
        fetched_at=float(data["fetched_at"]),
        expires_at=float(data["expires_at"]),
        txt_checked_at=float(data["txt_checked_at"]),
        last_used=float(data["last_used"]),
        failed_id=data["failed_id"],
        failed_at=float(data["failed_at"]),
        failure=None if failure is None else (ResultType(failure[0]), str(failure[1])),
        mx_hosts=tuple(str(h) for h in data["mx_hosts"]),
        dane=bool(data.get("dane", False)),
    )


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
        return SqliteDict(
            str(self.path),
            tablename="policies",
            encode=_encode,
            decode=json.loads,
            autocommit=False,
            journal_mode="WAL",
            outer_stack=False,
        )

    def _reader(self) -> sqlite3.Connection:
        """A plain read connection: reads skip sqlitedict's queue thread (WAL: no blocking)."""
        if self._read is None:
            self._read = sqlite3.connect(self.path, check_same_thread=False)
        return self._read

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._reader().execute(sql, args))

    def load_recent(self, limit: int) -> Iterator[CacheEntry]:
        """The `limit` most recently used entries, newest first; bad rows are logged, skipped."""
        rows = self._rows(
            'SELECT key, value FROM "policies" '
            "ORDER BY json_extract(value, '$.last_used') DESC LIMIT ?",
            (limit,),
        )
        for domain, raw in rows:
            try:
                yield entry_from_json(domain, json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("event=store-row-skipped domain=%s reason=%r", domain, str(exc))

    def get(self, domain: str) -> CacheEntry | None:
        rows = self._rows('SELECT key, value FROM "policies" WHERE key = ?', (domain,))
        if not rows:
            return None
        try:
            return entry_from_json(domain, json.loads(rows[0][1]))
        except (ValueError, KeyError, TypeError):
            return None

    def write(self, entries: list[CacheEntry], deletions: list[str]) -> None:
        """One transaction for a batch of changes."""
        with self._lock:
            for entry in entries:
                self._db[entry.domain] = entry_to_json(entry)
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
                'DELETE FROM "policies" WHERE key IN (SELECT key FROM "policies" '
                "ORDER BY json_extract(value, '$.last_used') ASC LIMIT ?)",
                (excess,),
            )
            self._db.commit()
        return excess

    def domains(self) -> list[str]:
        return [row[0] for row in self._rows('SELECT key FROM "policies"')]

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._reader().execute('SELECT count(*) FROM "policies"').fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._read is not None:
                self._read.close()
                self._read = None


class StoredFilter:
    """A Bloom filter of the domains the store holds: a miss for a never-seen domain (the
    common cold lookup) skips the disk read and its thread hop. 256 KiB; ~0.3 % false
    positives at 100k domains (a false positive only costs the read it would have made)."""

    BITS = 1 << 21

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS // 8)

    def _positions(self, domain: str) -> tuple[int, int, int]:
        h = hash(domain) & 0xFFFFFFFFFFFFFFFF
        mask = self.BITS - 1
        return h & mask, (h >> 21) & mask, (h >> 42) & mask

    def add(self, domain: str) -> None:
        for bit in self._positions(domain):
            self._bits[bit >> 3] |= 1 << (bit & 7)

    def __contains__(self, domain: str) -> bool:
        return all(self._bits[bit >> 3] & (1 << (bit & 7)) for bit in self._positions(domain))


class PolicyCache:
    """Hot set + store. All methods run on the event loop thread except `flush`/`load_*`."""

    def __init__(
        self, store: PolicyStore | None, *, memory_entries: int = 5_000, max_entries: int = 200_000
    ) -> None:
        self.store = store
        self.memory_entries = memory_entries
        self.max_entries = max_entries
        self._hot: OrderedDict[str, CacheEntry] = OrderedDict()
        self._dirty: dict[str, CacheEntry] = {}
        self._deleted: set[str] = set()
        self._stored = StoredFilter()

    def load(self, now: float) -> int:
        """Read the store at start: the most recently used entries go into memory.

        Only the hot set is decoded (SQL orders by last use), so start-up time and peak memory
        do not grow with the store; the rest is read on demand. Returns the stored count.
        """
        if self.store is None:
            return 0
        total = len(self.store)
        if total > self.max_entries:
            self.store.evict_oldest(self.max_entries)
        for domain in self.store.domains():
            self._stored.add(domain)
        recent = list(self.store.load_recent(self.memory_entries))
        for entry in reversed(recent):  # LRU order: oldest first
            self._hot[entry.domain] = entry
        return min(total, self.max_entries)

    def get(self, domain: str) -> CacheEntry | None:
        """Memory only (the answer path). Marks the entry most recently used."""
        entry = self._hot.get(domain)
        if entry is not None:
            self._hot.move_to_end(domain)
        return entry

    def maybe_stored(self, domain: str) -> bool:
        """False when the store certainly does not hold `domain` (no need to read it)."""
        return self.store is not None and domain in self._stored and domain not in self._deleted

    def load_from_store(self, domain: str) -> CacheEntry | None:
        """Disk read for a domain not in the hot set; call from a worker thread."""
        if self.store is None or domain in self._deleted:
            return None
        return self.store.get(domain)

    def put(self, entry: CacheEntry) -> None:
        """Insert or update (marks it for the next flush); evicts the LRU hot entry if full."""
        self._hot[entry.domain] = entry
        self._hot.move_to_end(entry.domain)
        self._dirty[entry.domain] = entry
        self._deleted.discard(entry.domain)
        self._stored.add(entry.domain)
        while len(self._hot) > self.memory_entries:
            self._hot.popitem(last=False)

    def mark_dirty(self, entry: CacheEntry) -> None:
        self._dirty[entry.domain] = entry
        self._stored.add(entry.domain)

    def stored_domains(self) -> list[str]:
        """Domains in the store (worker thread)."""
        return [] if self.store is None else self.store.domains()

    def remove(self, domain: str) -> None:
        self._hot.pop(domain, None)
        self._dirty.pop(domain, None)
        self._deleted.add(domain)

    def hot_entries(self) -> list[CacheEntry]:
        return list(self._hot.values())

    def __len__(self) -> int:
        return len(self._hot)

    def take_batch(self) -> tuple[list[CacheEntry], list[str]]:
        """Changes since the last flush (event loop thread); hand them to `write_batch`."""
        entries, deletions = list(self._dirty.values()), sorted(self._deleted)
        self._dirty.clear()
        self._deleted.clear()
        return entries, deletions

    def write_batch(self, entries: list[CacheEntry], deletions: list[str]) -> None:
        """Persist a batch (worker thread). Failures are logged; the batch is retried later."""
        if self.store is None or not (entries or deletions):
            return
        try:
            self.store.write(entries, deletions)
        except (sqlite3.Error, RuntimeError, OSError) as exc:
            log.error("event=store-write-failed entries=%d reason=%r", len(entries), str(exc))
            for entry in entries:
                self._dirty.setdefault(entry.domain, entry)
            self._deleted.update(deletions)

    def evict_store_overflow(self) -> int:
        """Drop the least recently used stored domains beyond `max_entries` (worker thread)."""
        return 0 if self.store is None else self.store.evict_oldest(self.max_entries)

    def close(self) -> None:
        if self.store is not None:
            self.write_batch(*self.take_batch())
            self.store.close()
