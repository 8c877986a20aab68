"""Prometheus metrics: cheap counters on the hot path, exposed through prometheus-client.

The socketmap path records every answer, and a cached answer has a budget of a few microseconds.
prometheus-client's `Counter.inc()` costs ~0.5 µs and `Histogram.observe()` ~1.1 µs (a lock
each), so the series here are plain Python ints bumped in place (~0.06 µs per `inc`, ~0.15 µs
per `observe`) and turned into metric families only when scraped, by a custom collector in
this module's own `REGISTRY` (never the global one).

Every labelled child is created at import with a fixed set of label values: the series exist
(at 0) from the first scrape, and no caller can add a label value — so no per-domain labels.
Updates are made from the event loop thread; the scrape thread only reads.
"""

from __future__ import annotations

import ipaddress
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from socket import AF_INET, AF_INET6
from typing import TypeVar

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
    """A monotonically increasing int; `inc` is one attribute update."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class CounterVec:
    """A counter family with one label whose values are fixed when it is declared."""

    def __init__(self, name: str, doc: str, label: str, values: Iterable[str]) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.children: dict[str, FastCounter] = {str(v): FastCounter() for v in values}

    def labels(self, value: str) -> FastCounter:
        """The pre-bound child; an undeclared value is a programming error (ValueError)."""
        try:
            return self.children[value]
        except KeyError:
            raise ValueError(f"{self.name}: undeclared {self.label} {value!r}") from None

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, child in self.children.items():
            family.add_metric([value], child.value)
        return family


class FastGauge:
    """A gauge that is either set by its owner or read from a callable at scrape time."""

    __slots__ = ("_function", "_value")

    def __init__(self) -> None:
        self._value: float = 0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self._value = value

    def set_function(self, function: Callable[[], float]) -> None:
        """Read `function()` at each scrape (e.g. `len` of the cache index)."""
        self._function = function

    @property
    def value(self) -> float:
        return self._function() if self._function is not None else self._value


@dataclass(frozen=True)
class Scalar:
    """A label-less counter or gauge as the collector sees it."""

    name: str
    doc: str
    source: FastCounter | FastGauge

    def family(self) -> Metric:
        if isinstance(self.source, FastCounter):
            return CounterMetricFamily(self.name, self.doc, value=self.source.value)
        return GaugeMetricFamily(self.name, self.doc, value=self.source.value)


_SCALARS: list[Scalar] = []
_S = TypeVar("_S", FastCounter, FastGauge)


def _scalar(source: _S, name: str, doc: str) -> _S:
    _SCALARS.append(Scalar(PREFIX + name, doc, source))
    return source


class FastHistogram:
    """A histogram bucketed by hand: `observe` is one bisect and two updates."""

    __slots__ = ("bounds", "counts", "doc", "name", "total")

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name, self.doc = name, doc
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # last slot: above the largest bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left puts a value equal to a bound into that bound's bucket (`le` is inclusive).
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def family(self) -> Metric:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            running += count
            cumulative.append((_le(bound), float(running)))
        return HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=self.total)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


# 10 µs (a cached answer) ... 5 s (a cold lookup that waited for DNS and HTTPS).
ANSWER_BUCKETS = (
    *(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3),
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

ANSWER_CLASSES = (
    "enforce",
    "notfound-none",
    "notfound-testing",
    "notfound-nopolicy",
    "notfound-key",
    "notfound-cold",
    "error",
)
FETCH_RESULTS = (
    "ok",
    ResultType.STS_POLICY_FETCH_ERROR.value,
    ResultType.STS_POLICY_INVALID.value,
    ResultType.STS_WEBPKI_INVALID.value,
)
PROBE_RESULTS = (
    "success",
    ResultType.STARTTLS_NOT_SUPPORTED.value,
    ResultType.CERTIFICATE_HOST_MISMATCH.value,
    ResultType.CERTIFICATE_EXPIRED.value,
    ResultType.CERTIFICATE_NOT_TRUSTED.value,
    ResultType.VALIDATION_FAILURE.value,
)
TRANSPORTS = ("mail", "https")

LOOKUPS = CounterVec(
    PREFIX + "lookups", "Socketmap answers by answer class.", "answer", ANSWER_CLASSES
)
FETCHES = CounterVec(
    PREFIX + "policy_fetches",
    "Policy discoveries by result (ok or the RFC 8460 failure type).",
    "result",
    FETCH_RESULTS,
)
REPORTS_SENT = CounterVec(
    PREFIX + "tlsrpt_reports_sent", "TLS reports delivered, by transport.", "transport", TRANSPORTS
)
REPORTS_FAILED = CounterVec(
    PREFIX + "tlsrpt_reports_failed",
    "TLS report delivery attempts that failed, by transport.",
    "transport",
    TRANSPORTS,
)
PROBES = CounterVec(
    PREFIX + "probes", "STARTTLS probes of MX hosts by result type.", "result", PROBE_RESULTS
)

LOOKUP_ENFORCE = LOOKUPS.labels("enforce")
LOOKUP_NOTFOUND_NONE = LOOKUPS.labels("notfound-none")
LOOKUP_NOTFOUND_TESTING = LOOKUPS.labels("notfound-testing")
LOOKUP_NOTFOUND_NOPOLICY = LOOKUPS.labels("notfound-nopolicy")
LOOKUP_NOTFOUND_KEY = LOOKUPS.labels("notfound-key")
LOOKUP_NOTFOUND_COLD = LOOKUPS.labels("notfound-cold")
LOOKUP_ERROR = LOOKUPS.labels("error")

FETCH_OK = FETCHES.labels("ok")
FETCH_ERROR = FETCHES.labels(ResultType.STS_POLICY_FETCH_ERROR)
FETCH_INVALID = FETCHES.labels(ResultType.STS_POLICY_INVALID)
FETCH_WEBPKI_INVALID = FETCHES.labels(ResultType.STS_WEBPKI_INVALID)

REPORTS_SENT_MAIL = REPORTS_SENT.labels("mail")
REPORTS_SENT_HTTPS = REPORTS_SENT.labels("https")
REPORTS_FAILED_MAIL = REPORTS_FAILED.labels("mail")
REPORTS_FAILED_HTTPS = REPORTS_FAILED.labels("https")

CACHE_HITS = _scalar(FastCounter(), "cache_hits", "Lookups answered from the policy cache.")
CACHE_MISSES = _scalar(FastCounter(), "cache_misses", "Lookups the policy cache could not answer.")
REFRESH_FAILURES = _scalar(
    FastCounter(), "refresh_failures", "Background policy refreshes that failed (policy kept)."
)
TLSRPT_DATAGRAMS_RECEIVED = _scalar(
    FastCounter(), "tlsrpt_datagrams_received", "libtlsrpt datagrams received from Postfix."
)
TLSRPT_DATAGRAMS_REJECTED = _scalar(
    FastCounter(), "tlsrpt_datagrams_rejected", "libtlsrpt datagrams not parsed or not accepted."
)
TLSRPT_EVENTS_STORED = _scalar(
    FastCounter(), "tlsrpt_events_stored", "TLS session outcomes added to the report store."
)
TESTING_MISMATCHES = _scalar(
    FastCounter(),
    "testing_mismatches",
    "Probes of testing-mode domains' MX hosts that would have failed under enforce.",
)
CACHE_ENTRIES = _scalar(FastGauge(), "cache_entries", "Policies in the cache.")

ANSWER_SECONDS = FastHistogram(
    PREFIX + "answer_duration_seconds",
    "Time from a complete socketmap request to its reply.",
    ANSWER_BUCKETS,
)


def fetch_counter(result: ResultType | None) -> FastCounter:
    """The fetch child for a discovery outcome: None is success, else its RFC 8460 type."""
    return FETCH_OK if result is None else FETCHES.labels(result.value)


class _Collector:
    """Turns the plain counters into metric families at scrape time."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            PREFIX + "build_info", "Version of the daemon.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        for vec in (LOOKUPS, FETCHES, REPORTS_SENT, REPORTS_FAILED, PROBES):
            yield vec.family()
        for scalar in _SCALARS:
            yield scalar.family()
        yield ANSWER_SECONDS.family()


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(_Collector())


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class MetricsServer:
    """A running exposition endpoint; `close()` stops it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        self.host, self.port = str(server.server_address[0]), int(server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def loopback_host(host: str) -> str:
    """The IP to bind for `host`; anything that is not a loopback address is refused."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"metrics listener must be a loopback IP address, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"metrics listener must be a loopback address, got {host!r}")
    return str(address)


def start_metrics_server(host: str, port: int) -> MetricsServer:
    """Serve `/metrics` (any path) from a daemon thread; loopback only (ValueError otherwise)."""
    bind = loopback_host(host)
    server_class = type(
        "_BoundServer", (_Server,), {"address_family": AF_INET6 if ":" in bind else AF_INET}
    )
    server = server_class((bind, port), MetricsHandler.factory(REGISTRY))
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
