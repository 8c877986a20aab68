"""Per-answer metrics cost: our plain-int series next to prometheus-client's own objects.

Run: python3 bench/metrics_cost.py  (prints µs per answer for both and the ratio).
A benchmark, not a test: timings on a shared machine are not assertions.
"""

from __future__ import annotations

import timeit

from prometheus_client import CollectorRegistry, Counter, Histogram

from mta_sts_policyd import metrics


def main() -> None:
    registry = CollectorRegistry()
    ref_lookup = Counter("r", "r", ["answer"], registry=registry).labels("enforce")
    ref_hits = Counter("h", "h", registry=registry)
    ref_hist = Histogram("l", "l", registry=registry, buckets=metrics.ANSWER_BUCKETS)

    def ours() -> None:
        metrics.LOOKUP_ENFORCE.inc()
        metrics.CACHE_HITS.inc()
        metrics.ANSWER_SECONDS.observe(3e-5)

    def reference() -> None:
        ref_lookup.inc()
        ref_hits.inc()
        ref_hist.observe(3e-5)

    n = 50_000
    ours_s = min(timeit.repeat(ours, number=n, repeat=7)) / n
    ref_s = min(timeit.repeat(reference, number=n, repeat=7)) / n
    print(f"ours {ours_s * 1e6:.2f} µs/answer, prometheus-client {ref_s * 1e6:.2f} µs/answer, "
          f"ratio {ours_s / ref_s:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
