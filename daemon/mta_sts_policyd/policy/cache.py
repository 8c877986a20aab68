"""Policy cache: a bounded in-memory hot set over the persistent store (policy_store.py).

Why two tiers: 100k cached policies as Python objects cost more memory than the whole daemon may
use (RSS target 60 MB), while an MTA looks up a far smaller working set. The hot set (LRU,
`memory_entries`) answers from memory; entries only on disk are read off the event loop and
promoted. Writes are batched (write-behind) and flushed every `flush_interval` and at shutdown.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection

from mta_sts_policyd.errors import StoreError
from mta_sts_policyd.policy.entry import CacheEntry, entry_from_json, entry_to_json
from mta_sts_policyd.policy.store.sqlite import PolicyStore, RefreshFacts

__all__ = ["CacheEntry", "PolicyCache", "PolicyStore", "StoredFilter", "entry_from_json",
           "entry_to_json"]  # fmt: skip

log = logging.getLogger(__name__)


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
        self._touched: dict[str, float] = {}
        """last_used of entries pushed out of memory: only that field is written back."""
        self._stored = StoredFilter()
        self.write_failures = 0
        """Failed flushes in a row (0: the last one worked); the flush loop backs off on it."""
        self._flush_lock = threading.Lock()
        """One batch at a time between the store and memory (flush loop, shutdown)."""

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

    @property
    def hot_set(self) -> OrderedDict[str, CacheEntry]:
        """The memory tier in LRU order (the same object for the cache's life). For the reply
        memo, which checks and touches entries without a method call; others use get/put."""
        return self._hot

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
        unsaved = self._dirty.get(domain)  # newer than the store while writes fail
        return unsaved if unsaved is not None else self.store.get(domain)

    def put(self, entry: CacheEntry, *, dirty: bool = True) -> None:
        """Insert or update (marked for the next flush unless it was just read from the store);
        evicts the least recently used hot entry if full."""
        self._hot[entry.domain] = entry
        self._hot.move_to_end(entry.domain)
        if dirty:
            self._dirty[entry.domain] = entry
            self._deleted.discard(entry.domain)
        self._stored.add(entry.domain)
        while len(self._hot) > self.memory_entries:
            _, evicted = self._hot.popitem(last=False)
            if self.store is not None and evicted.domain not in self._dirty:
                # The store learns it is in use (refresh, store eviction) without a rewrite.
                self._touched[evicted.domain] = evicted.last_used

    def mark_dirty(self, entry: CacheEntry) -> None:
        self._dirty[entry.domain] = entry
        self._stored.add(entry.domain)

    def stored_due(
        self, since: float, now: float, interval: float, due: Callable[[RefreshFacts], bool]
    ) -> list[str]:
        """Domains only in the store, used since `since`, whose refresh is `due` (worker thread).
        Only the due names are kept: a pass over 100k stored policies must not hold them."""
        if self.store is None:
            return []
        hot = self._hot
        candidates = self.store.refresh_candidates(since, now, interval)
        return [f.domain for f in candidates if f.domain not in hot and due(f)]

    def stored_domains(self) -> list[str]:
        """Domains in the store (worker thread)."""
        return [] if self.store is None else list(self.store.domains())

    def stored_count(self, forgotten: Collection[str] = ()) -> int:
        """Policies in the store (worker thread) less those of `forgotten` it still holds
        (`pending_deletions()`, taken on the event loop): `cache list` counts both tiers, and a
        purged domain is gone from the count at once, not at the next flush."""
        if self.store is None:
            return 0
        return len(self.store) - (self.store.count_of(forgotten) if forgotten else 0)

    def pending_deletions(self) -> frozenset[str]:
        """Domains removed (purged) and not yet deleted from the store (event loop thread)."""
        return frozenset(self._deleted)

    def delete_stored(self, domains: Collection[str]) -> bool:
        """Delete `domains` from the store now (worker thread), not at the next flush: a purge
        holds even if the process is killed before then. They stay marked deleted until that
        flush (which deletes them again, harmlessly), so a batch a failed flush puts back
        cannot bring them back. False (logged) when the store cannot be written now; the next
        flush that works deletes them."""
        if self.store is None or not domains:
            return True
        with self._flush_lock:
            try:
                self.store.write([], sorted(domains))
            except (StoreError, sqlite3.Error, RuntimeError, OSError) as exc:
                log.error("event=store-purge-failed entries=%d reason=%r kept deleted in memory,"
                          " written at the next flush", len(domains), str(exc))  # fmt: skip
                return False
        return True

    def remove(self, domain: str) -> None:
        self._hot.pop(domain, None)
        self._dirty.pop(domain, None)
        self._deleted.add(domain)

    def hot_entries(self) -> list[CacheEntry]:
        return list(self._hot.values())

    def __len__(self) -> int:
        return len(self._hot)

    def take_batch(self) -> tuple[list[CacheEntry], list[str], dict[str, float]]:
        """Changes since the last flush (event loop thread); hand them to `write_batch`:
        whole entries, deletions, and last_used times of entries no longer in memory."""
        entries, deletions = list(self._dirty.values()), sorted(self._deleted)
        touched = {d: t for d, t in self._touched.items() if d not in self._dirty}
        self._dirty.clear()
        self._deleted.clear()
        self._touched = {}
        return entries, deletions, touched

    def write_batch(
        self,
        entries: list[CacheEntry],
        deletions: list[str],
        touched: dict[str, float] | None = None,
    ) -> bool:
        """Persist a batch (worker thread). A failure (full disk, read-only, a stalled writer)
        is logged and the batch kept for the next flush; answers keep coming from memory."""
        with self._flush_lock:
            return self._write(entries, deletions, touched or {})

    def _write(
        self, entries: list[CacheEntry], deletions: list[str], touched: dict[str, float]
    ) -> bool:
        if self.store is None or not (entries or deletions or touched):
            return True
        try:
            self.store.write(entries, deletions, touched)
        except (StoreError, sqlite3.Error, RuntimeError, OSError) as exc:
            self.write_failures += 1
            log.error(
                "event=store-write-failed entries=%d failures=%d reason=%r kept in memory,"
                " retried at the next flush",
                len(entries) + len(deletions) + len(touched),
                self.write_failures,
                str(exc),
            )
            self._keep_for_retry(entries, deletions, touched)
            return False
        if self.write_failures:
            log.info("event=store-write-recovered entries=%d after_failures=%d",
                     len(entries) + len(deletions) + len(touched), self.write_failures)  # fmt: skip
            self.write_failures = 0
        return True

    def _keep_for_retry(
        self, entries: list[CacheEntry], deletions: list[str], touched: dict[str, float]
    ) -> None:
        """Put a failed batch back, under anything newer that arrived meanwhile."""
        for entry in entries:
            if entry.domain not in self._deleted:
                self._dirty.setdefault(entry.domain, entry)
        self._deleted.update(d for d in deletions if d not in self._dirty)
        for domain, last_used in touched.items():
            self._touched.setdefault(domain, last_used)

    def unsaved(self) -> int:
        """Changes not yet in the store (what a SIGKILL now would lose)."""
        return len(self._dirty) + len(self._deleted) + len(self._touched)

    def evict_store_overflow(self) -> int:
        """Drop the least recently used stored domains beyond `max_entries` (worker thread); a
        store that cannot be written now is tried again at the next eviction round."""
        if self.store is None:
            return 0
        try:
            return self.store.evict_oldest(self.max_entries)
        except StoreError as exc:
            log.error("event=store-evict-failed reason=%r", str(exc))
            return 0

    def close(self) -> int:
        """Flush and close (worker thread); returns how many changes could not be written.
        A flush still running from the flush loop (its task was cancelled, its thread was
        not) finishes first, so a batch it puts back is part of this last one."""
        if self.store is None:
            return 0
        with self._flush_lock:
            lost = 0 if self._write(*self.take_batch()) else self.unsaved()
            self.store.close()
        return lost
