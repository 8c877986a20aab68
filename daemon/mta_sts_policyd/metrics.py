"""Prometheus metrics: plain ints on the hot path, turned into metric families when scraped.

A cached socketmap answer has a budget of a few microseconds. prometheus-client's
`Counter.inc()` costs ~0.5 µs and `Histogram.observe()` ~1.1 µs (a lock each), so the series
here are Python ints bumped in place (~0.03 µs per `inc`, ~0.15 µs per `observe`) and a custom
collector in this module's own `REGISTRY` (never the global one) reads them at scrape time.

Two ways to feed a series, which add up: call `inc`/`observe` on the module-level objects, or
`set_function` a callable that returns the owner's own counter (e.g. `Lookup.stats`), read
only at scrape time. Every label value is declared here, so no series can carry a domain.
Writers are the event loop or one thread per counter; the scrape thread only reads.
"""

from __future__ import annotations

import ipaddress
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.server import ThreadingHTTPServer
from socket import AF_INET6
from typing import Protocol

from prometheus_client import CollectorRegistry, MetricsHandler
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from mta_sts_policyd import __version__
from mta_sts_policyd.errors import ResultType

PREFIX = "mta_sts_policyd_"


class FastCounter:
    """A monotonically increasing number; `inc` is one attribute update."""

    __slots__ = ("function", "value")

    def __init__(self) -> None:
        self.value: float = 0
        self.function: Callable[[], float] | None = None

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def set_function(self, function: Callable[[], float] | None) -> None:
        """Add `function()` (an owner's own counter) to the exported value at scrape time."""
        self.function = function

    def read(self) -> float:
        return self.value + (self.function() if self.function is not None else 0)


class FastGauge(FastCounter):
    """A gauge: set by its owner, or read from `function()` at scrape time (which then wins)."""

    __slots__ = ()

    def set(self, value: float) -> None:
        self.value = value

    def read(self) -> float:
        return self.function() if self.function is not None else self.value


class Scalar:
    """A label-less counter or gauge family."""

    def __init__(self, name: str, doc: str, source: FastCounter) -> None:
        self.name, self.doc, self.source = PREFIX + name, doc, source

    def family(self) -> Metric:
        if isinstance(self.source, FastGauge):
            return GaugeMetricFamily(self.name, self.doc, value=self.source.read())
        return CounterMetricFamily(self.name, self.doc, value=self.source.read())


class CounterVec:
    """A counter family with one label whose values are all declared up front."""

    def __init__(self, name: str, doc: str, label: str, values: Iterable[str]) -> None:
        self.name, self.doc, self.label = PREFIX + name, doc, label
        self.children = {str(v): FastCounter() for v in values}
        self.function: Callable[[], Mapping[str, float]] | None = None

    def labels(self, value: str) -> FastCounter:
        """The pre-bound child; an undeclared value is a programming error (ValueError)."""
        try:
            return self.children[value]
        except KeyError:
            raise ValueError(f"{self.name}: undeclared {self.label} {value!r}") from None

    def set_function(self, function: Callable[[], Mapping[str, float]] | None) -> None:
        """Add `function()[label]` per declared label at scrape time; other keys are ignored."""
        self.function = function

    def family(self) -> Metric:
        extra = self.function() if self.function is not None else {}
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, child in self.children.items():
            family.add_metric([value], child.value + extra.get(value, 0))
        return family


HistogramSource = Callable[[], tuple[Sequence[int], float]]


class FastHistogram:
    """A histogram bucketed by hand: `observe` is one bisect and two updates."""

    __slots__ = ("bounds", "counts", "doc", "function", "name", "total")

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name, self.doc = PREFIX + name, doc
        self.bounds = tuple(bounds)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot: above the largest bound
        self.total = 0.0
        self.function: HistogramSource | None = None

    def observe(self, seconds: float) -> None:
        # bisect_left files a value equal to a bound under that bound (`le` is inclusive).
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def set_function(self, bounds: Sequence[float], function: HistogramSource | None) -> None:
        """Add an owner's (per-bucket counts, sum) at scrape time; its bounds must be ours."""
        if tuple(bounds) != self.bounds:
            raise ValueError(f"{self.name}: source bounds differ from {self.bounds}")
        self.function = function

    def family(self) -> Metric:
        counts, total = list(self.counts), self.total
        if self.function is not None:
            extra, extra_total = self.function()
            counts = [a + b for a, b in zip(counts, extra, strict=True)]
            total += extra_total
        buckets, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)


# 10 µs (a cached answer) ... 5 s (a cold lookup that waited for DNS and HTTPS).
ANSWER_BUCKETS = (
    *(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005),
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ANSWER_CLASSES = (
    *("enforce", "notfound-none", "notfound-testing", "notfound-nopolicy"),
    *("notfound-key", "notfound-cold", "error"),
)
_R = ResultType
FETCH_FAILURES = (_R.STS_POLICY_FETCH_ERROR, _R.STS_POLICY_INVALID, _R.STS_WEBPKI_INVALID)
PROBE_FAILURES = (
    *(_R.STARTTLS_NOT_SUPPORTED, _R.CERTIFICATE_HOST_MISMATCH, _R.CERTIFICATE_EXPIRED),
    *(_R.CERTIFICATE_NOT_TRUSTED, _R.VALIDATION_FAILURE),
)
TRANSPORTS = ("mail", "https")

LOOKUPS = CounterVec("lookups", "Socketmap answers by answer class.", "answer", ANSWER_CLASSES)
FETCHES = CounterVec(
    "policy_fetches",
    "Policy discoveries: ok or the RFC 8460 failure type.",
    "result",
    ("ok", *FETCH_FAILURES),
)
REPORTS_SENT = CounterVec("tlsrpt_reports_sent", "TLS reports delivered.", "transport", TRANSPORTS)
REPORTS_FAILED = CounterVec(
    "tlsrpt_reports_failed", "TLS report delivery attempts that failed.", "transport", TRANSPORTS
)
PROBES = CounterVec(
    "probes",
    "STARTTLS probes of MX hosts: success, the RFC 8460 result type, or transient.",
    "result",
    ("success", *PROBE_FAILURES, "transient"),
)

LOOKUP_ENFORCE = LOOKUPS.labels("enforce")
LOOKUP_NOTFOUND_NONE = LOOKUPS.labels("notfound-none")
LOOKUP_NOTFOUND_TESTING = LOOKUPS.labels("notfound-testing")
LOOKUP_NOTFOUND_NOPOLICY = LOOKUPS.labels("notfound-nopolicy")
LOOKUP_NOTFOUND_KEY = LOOKUPS.labels("notfound-key")
LOOKUP_NOTFOUND_COLD = LOOKUPS.labels("notfound-cold")
LOOKUP_ERROR = LOOKUPS.labels("error")
FETCH_OK = FETCHES.labels("ok")
FETCH_ERROR = FETCHES.labels(_R.STS_POLICY_FETCH_ERROR)
FETCH_INVALID = FETCHES.labels(_R.STS_POLICY_INVALID)
FETCH_WEBPKI_INVALID = FETCHES.labels(_R.STS_WEBPKI_INVALID)
REPORTS_SENT_MAIL = REPORTS_SENT.labels("mail")
REPORTS_SENT_HTTPS = REPORTS_SENT.labels("https")
REPORTS_FAILED_MAIL = REPORTS_FAILED.labels("mail")
REPORTS_FAILED_HTTPS = REPORTS_FAILED.labels("https")

CACHE_HITS = FastCounter()
CACHE_MISSES = FastCounter()
MEMO_HITS = FastCounter()
REFRESH_FAILURES = FastCounter()
TLSRPT_DATAGRAMS_RECEIVED = FastCounter()
TLSRPT_DATAGRAMS_REJECTED = FastCounter()
TLSRPT_EVENTS_STORED = FastCounter()
TESTING_MISMATCHES = FastCounter()
CACHE_ENTRIES = FastGauge()
ANSWER_SECONDS = FastHistogram(
    "answer_duration_seconds", "Time from a socketmap request to its reply.", ANSWER_BUCKETS
)

_SCALARS = (
    Scalar("cache_hits", "Lookups answered from the policy cache.", CACHE_HITS),
    Scalar("cache_misses", "Lookups the policy cache could not answer.", CACHE_MISSES),
    Scalar(
        "reply_memo_hits",
        "Cache hits written straight from the reply memo (repeat requests, enforce domains).",
        MEMO_HITS,
    ),
    Scalar("refresh_failures", "Failed background policy refreshes.", REFRESH_FAILURES),
    Scalar("tlsrpt_datagrams_received", "libtlsrpt datagrams received.", TLSRPT_DATAGRAMS_RECEIVED),
    Scalar("tlsrpt_datagrams_rejected", "libtlsrpt datagrams refused.", TLSRPT_DATAGRAMS_REJECTED),
    Scalar("tlsrpt_events_stored", "TLS outcomes added to the store.", TLSRPT_EVENTS_STORED),
    Scalar(
        "testing_mismatches",
        "Probes of testing-mode MX hosts that would fail under enforce.",
        TESTING_MISMATCHES,
    ),
    Scalar("cache_entries", "Policies in the cache.", CACHE_ENTRIES),
)


def fetch_counter(result: ResultType | None) -> FastCounter:
    """The fetch child for a discovery outcome: None is success, else its RFC 8460 type."""
    return FETCH_OK if result is None else FETCHES.labels(result.value)


class LookupStatsSource(Protocol):
    """What `bind_lookup_stats` reads (lookup_stats.LookupStats has these)."""

    misses: int
    fetch_ok: int
    fetch_failures: dict[str, int]
    refresh_failures: int
    memo_hits: int

    def answers_by_class(self) -> dict[str, int]: ...

    def cache_hits(self) -> int: ...

    def latency(self) -> tuple[list[int], float]: ...


def bind_lookup_stats(stats: LookupStatsSource, bounds: Sequence[float]) -> None:
    """Export a Lookup's own counters (rebinding replaces the previous Lookup)."""
    LOOKUPS.set_function(stats.answers_by_class)
    CACHE_HITS.set_function(stats.cache_hits)
    CACHE_MISSES.set_function(lambda: stats.misses)
    MEMO_HITS.set_function(lambda: stats.memo_hits)
    REFRESH_FAILURES.set_function(lambda: stats.refresh_failures)
    FETCHES.set_function(lambda: {"ok": stats.fetch_ok, **stats.fetch_failures})
    ANSWER_SECONDS.set_function(bounds, stats.latency)


class CollectorStatsSource(Protocol):
    """What `bind_collector_stats` reads (tlsrpt.collector.CollectorStats has these)."""

    received: int
    rejected: int
    oversized: int
    backlog_dropped: int
    events_submitted: int


def bind_collector_stats(stats: CollectorStatsSource) -> None:
    """Export the TLS-RPT collector's counters; oversized and dropped ones count as rejected."""
    TLSRPT_DATAGRAMS_RECEIVED.set_function(lambda: stats.received)
    TLSRPT_DATAGRAMS_REJECTED.set_function(
        lambda: stats.rejected + stats.oversized + stats.backlog_dropped
    )
    TLSRPT_EVENTS_STORED.set_function(lambda: stats.events_submitted)


class _Collector:
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(PREFIX + "build_info", "Daemon version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        for vec in (LOOKUPS, FETCHES, REPORTS_SENT, REPORTS_FAILED, PROBES):
            yield vec.family()
        for scalar in _SCALARS:
            yield scalar.family()
        yield ANSWER_SECONDS.family()


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(_Collector())


class MetricsServer:
    """A running exposition endpoint (HTTP, any path); `close()` stops it."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.host, self.port = str(server.server_address[0]), int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def loopback_host(host: str) -> str:
    """The IP to bind for `host`; anything that is not a loopback address is refused."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise ValueError(f"metrics listener must be a loopback IP address, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"metrics listener must be a loopback address, got {host!r}")
    return str(address)


class _Server4(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server4):
    address_family = AF_INET6


def start_metrics_server(host: str, port: int) -> MetricsServer:
    """Serve the exposition from a daemon thread; loopback only (ValueError otherwise)."""
    bind = loopback_host(host)
    server_class = _Server6 if ":" in bind else _Server4
    return MetricsServer(server_class((bind, port), MetricsHandler.factory(REGISTRY)))
