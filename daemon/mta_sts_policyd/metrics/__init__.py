"""Prometheus metrics: plain ints on the hot path, turned into metric families when scraped.

The series the daemon exports are declared here, in this package's own `REGISTRY` (never the
global one); fast.py holds the cheap counter types and http.py the loopback exposition.

Two ways to feed a series, which add up: call `inc`/`observe` on the module-level objects, or
`set_function` a callable that returns the owner's own counter (e.g. `Lookup.stats`), read
only at scrape time. Every label value is declared here, so no series can carry a domain.
Writers are the event loop or one thread per counter; the scrape thread only reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from mta_sts_policyd import __version__
from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.metrics.fast import (
    PREFIX,
    CounterVec,
    FastCounter,
    FastGauge,
    FastHistogram,
    HistogramSource,
    Scalar,
)
from mta_sts_policyd.metrics.http import MetricsServer, loopback_host, serve_registry

__all__ = [  # re-exported: callers write metrics.FastCounter, metrics.MetricsServer, ...
    "PREFIX",
    "CounterVec",
    "FastCounter",
    "FastGauge",
    "FastHistogram",
    "HistogramSource",
    "MetricsServer",
    "Scalar",
    "loopback_host",
    "serve_registry",
]

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
TIERS = ("memory", "redis", "store")
FLEET_FETCH_ROLES = ("fetched", "adopted", "waited", "fallback")
TIER_HITS = CounterVec(
    "cache_tier_hits",
    "Policies found in each tier of the cache (fleet mode: memory, Redis, the local store).",
    "tier",
    TIERS,
)
FLEET_FETCHES = CounterVec(
    "fleet_policy_updates",
    "Fleet mode: how this node got a policy it needed (fetched itself holding the fleet lock,"
    " adopted from Redis, waited for another node's fetch, fallback: fetched without Redis).",
    "role",
    FLEET_FETCH_ROLES,
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
CONNECTIONS_REFUSED = FastCounter()
CACHE_ENTRIES = FastGauge()
DNS_FAILURES = FastCounter()
LAST_REFRESH_SUCCESS = FastGauge()
MAILLOG_LINES = FastCounter()
MAILLOG_READ_ERRORS = FastCounter()
MAILLOG_LAST_LINE = FastGauge()
MAILLOG_SILENT = FastGauge()
MAILLOG_NOT_UNDERSTOOD = FastCounter()
MAILLOG_SKIPPED = FastCounter()
MAILLOG_SESSIONS = FastCounter()
FLEET_BREAKER_OPEN = FastGauge()
FLEET_REPORTS_BREAKER_OPEN = FastGauge()
FLEET_REDIS_CALLS = FastCounter()
FLEET_REDIS_ERRORS = FastCounter()
FLEET_REDIS_SKIPPED = FastCounter()
FLEET_LOCK_WAITS = FastCounter()
FLEET_QUEUED_WRITES = FastGauge()
FLEET_REFRESH_CLAIMED = FastCounter()
FLEET_REPORTS_SENT = FastCounter()
FLEET_POSSIBLE_DUPLICATES = FastCounter()
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
    Scalar(
        "socketmap_connections_refused",
        "Socketmap connections refused (over server.max_connections, or while stopping).",
        CONNECTIONS_REFUSED,
    ),
    Scalar("dns_failures", "TXT lookups that failed (timeout, SERVFAIL, ...).", DNS_FAILURES),
    Scalar(
        "last_successful_refresh_timestamp_seconds",
        "Unix time of the last successful policy discovery (TXT check or fetch); 0: none yet.",
        LAST_REFRESH_SUCCESS,
    ),
    Scalar("maillog_lines", "Postfix log lines read (file or journal).", MAILLOG_LINES),
    Scalar(
        "maillog_read_errors",
        "Times the Postfix log could not be read (permission, journal access).",
        MAILLOG_READ_ERRORS,
    ),
    Scalar(
        "maillog_last_line_timestamp_seconds",
        "Unix time a Postfix log line was last read; 0: none since start.",
        MAILLOG_LAST_LINE,
    ),
    Scalar(
        "maillog_silent",
        "1 while no Postfix log line has been read for maillog.silence_alert seconds.",
        MAILLOG_SILENT,
    ),
    Scalar(
        "maillog_lines_not_understood",
        "Postfix log lines in no syslog form the follower knows.",
        MAILLOG_NOT_UNDERSTOOD,
    ),
    Scalar(
        "maillog_lines_skipped",
        "Over-long Postfix log lines and NUL regions skipped (e.g. left by a crash).",
        MAILLOG_SKIPPED,
    ),
    Scalar("maillog_sessions", "TLS sessions the log follower reported.", MAILLOG_SESSIONS),
    Scalar(
        "fleet_breaker_open",
        "Fleet mode: 1 while Redis is off the answer path (circuit breaker open or half open).",
        FLEET_BREAKER_OPEN,
    ),
    Scalar(
        "fleet_reports_breaker_open",
        "Fleet mode: 1 while the TLS reports' Redis client has its breaker open (reports wait).",
        FLEET_REPORTS_BREAKER_OPEN,
    ),
    Scalar("fleet_redis_calls", "Fleet mode: calls made to Redis.", FLEET_REDIS_CALLS),
    Scalar("fleet_redis_errors", "Fleet mode: Redis calls that failed.", FLEET_REDIS_ERRORS),
    Scalar(
        "fleet_redis_skipped",
        "Fleet mode: Redis calls not made because the breaker was open.",
        FLEET_REDIS_SKIPPED,
    ),
    Scalar(
        "fleet_lock_waits",
        "Fleet mode: lookups that waited for another node's fetch of the same policy.",
        FLEET_LOCK_WAITS,
    ),
    Scalar(
        "fleet_queued_writes",
        "Fleet mode: shared-cache writes waiting for Redis to come back.",
        FLEET_QUEUED_WRITES,
    ),
    Scalar(
        "fleet_refresh_claimed",
        "Fleet mode: refreshes this node claimed from the shared queue.",
        FLEET_REFRESH_CLAIMED,
    ),
    Scalar(
        "fleet_reports_sent",
        "Fleet mode: TLS reports this node sent for the whole fleet.",
        FLEET_REPORTS_SENT,
    ),
    Scalar(
        "fleet_possible_duplicates",
        "Fleet mode: reports sent again because a sender stopped between sending and recording"
        " (the same bytes as the first).",
        FLEET_POSSIBLE_DUPLICATES,
    ),
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
    txt_failures: int
    last_success: float

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
    DNS_FAILURES.set_function(lambda: stats.txt_failures)
    LAST_REFRESH_SUCCESS.set_function(lambda: stats.last_success)
    FETCHES.set_function(lambda: {"ok": stats.fetch_ok, **stats.fetch_failures})
    ANSWER_SECONDS.set_function(bounds, stats.latency)


class MaillogSource(Protocol):
    """What `bind_maillog` reads (tlsrpt.maillog.watchdog.MaillogWatchdog has these)."""

    read_errors: int
    silent: bool
    last_line_at: float

    def lines(self) -> int: ...


def bind_maillog(source: MaillogSource) -> None:
    """Export the log follower's health: lines read, read errors, silence."""
    MAILLOG_LINES.set_function(source.lines)
    MAILLOG_READ_ERRORS.set_function(lambda: source.read_errors)
    MAILLOG_LAST_LINE.set_function(lambda: source.last_line_at)
    MAILLOG_SILENT.set_function(lambda: float(source.silent))


class MaillogStatsSource(Protocol):
    """What `bind_maillog_stats` reads (tlsrpt.maillog.sessions.MaillogCounters has these)."""

    not_understood: int
    skipped: int
    sessions: int


def bind_maillog_stats(stats: MaillogStatsSource) -> None:
    """Export what became of the log lines: not understood, skipped, sessions reported."""
    MAILLOG_NOT_UNDERSTOOD.set_function(lambda: stats.not_understood)
    MAILLOG_SKIPPED.set_function(lambda: stats.skipped)
    MAILLOG_SESSIONS.set_function(lambda: stats.sessions)


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
        vectors = (LOOKUPS, FETCHES, REPORTS_SENT, REPORTS_FAILED, PROBES, TIER_HITS, FLEET_FETCHES)
        for vec in vectors:
            yield vec.family()
        for scalar in _SCALARS:
            yield scalar.family()
        yield ANSWER_SECONDS.family()


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(_Collector())


def start_metrics_server(host: str, port: int, *, allow_remote: bool = False) -> MetricsServer:
    """Serve the exposition from a daemon thread; loopback only unless `allow_remote`."""
    return serve_registry(host, port, REGISTRY, allow_remote=allow_remote)
