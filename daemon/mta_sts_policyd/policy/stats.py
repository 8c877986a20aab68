"""Plain-integer counters of the answer path, read by metrics/ at scrape time.

Why not prometheus objects directly: the answer path must cost a few microseconds; incrementing
an int attribute is the cheapest thing Python can do, and the exposition converts at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.sts.model import Mode

LATENCY_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


@dataclass(slots=True)
class LookupStats:
    hits: int = 0
    misses: int = 0
    enforce: int = 0
    notfound_testing: int = 0
    notfound_none: int = 0
    notfound_nopolicy: int = 0
    notfound_key: int = 0
    notfound_cold: int = 0
    errors: int = 0
    txt_failures: int = 0
    last_success: float = 0.0
    """Wall time of the last discovery step that worked (a TXT answer); metrics and alerts."""
    fetch_ok: int = 0
    fetch_failures: dict[str, int] = field(default_factory=dict)
    refresh_failures: int = 0
    refresh_active: int = 0
    refresh_peak: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    store_hits: int = 0
    """Valid policies read from the local store on a memory miss."""
    fleet: dict[str, int] = field(default_factory=dict)
    """Fleet mode: how policies were got (fetched, adopted, waited, fallback), the policies
    found in the shared tier (redis) and the lock waits (lock_waits)."""
    memo_hits: int = 0
    """Answers written by the reply memo: enforce answers from the cache, counted only here
    (one increment on that path) and added to hits, enforce and the lowest latency bucket on
    export."""

    def observe(self, seconds: float) -> None:
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def cache_hits(self) -> int:
        return self.hits + self.memo_hits

    def latency(self) -> tuple[list[int], float]:
        """Histogram counts and sum; memo answers (untimed, far below 10 µs) in the first bucket."""
        counts = list(self.latency_counts)
        counts[0] += self.memo_hits
        return counts, self.latency_sum

    def count_reply(self, entry: CacheEntry) -> None:
        policy = entry.policy
        if policy is None:
            self.notfound_nopolicy += 1
        elif policy.mode is Mode.ENFORCE:
            self.enforce += 1
        elif policy.mode is Mode.TESTING:
            self.notfound_testing += 1
        else:
            self.notfound_none += 1

    def count_fleet(self, what: str) -> None:
        self.fleet[what] = self.fleet.get(what, 0) + 1

    def tier_hits(self) -> dict[str, int]:
        return {
            "memory": self.cache_hits(),
            "redis": self.fleet.get("redis", 0),
            "store": self.store_hits,
        }

    def count_fetch_failure(self, result_type: ResultType) -> None:
        self.fetch_failures[result_type.value] = self.fetch_failures.get(result_type.value, 0) + 1

    def answers_by_class(self) -> dict[str, int]:
        return {
            "enforce": self.enforce + self.memo_hits,
            "notfound-testing": self.notfound_testing,
            "notfound-none": self.notfound_none,
            "notfound-nopolicy": self.notfound_nopolicy,
            "notfound-key": self.notfound_key,
            "notfound-cold": self.notfound_cold,
            "error": self.errors,
        }
