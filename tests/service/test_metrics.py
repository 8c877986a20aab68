"""metrics/: exposition over loopback HTTP, fixed label sets, hot-path cost (issue 3 §8)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from mta_sts_policyd import __version__, metrics
from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.policy.stats import LATENCY_BUCKETS, LookupStats
from mta_sts_policyd.tlsrpt.libtlsrpt.collector import CollectorStats
from support.ports import ipv6_loopback

P = metrics.PREFIX
ALLOWED_LABELS = {"answer", "result", "transport", "version", "le", "tier", "role"}


@pytest.fixture(scope="module")
def server() -> Iterator[metrics.MetricsServer]:
    srv = metrics.start_metrics_server("127.0.0.1", 0)
    yield srv
    srv.close()


def scrape(srv: metrics.MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"http://127.0.0.1:{srv.port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


OWN_DOMAIN = P + "own_domain_"


def value(name: str, **labels: str) -> float:
    got = metrics.REGISTRY.get_sample_value(name, labels)
    assert got is not None, name
    return got


def test_scrape_has_every_series_and_only_fixed_labels(server: metrics.MetricsServer) -> None:
    samples = scrape(server)
    names = {name for name, _ in samples}
    for answer in metrics.ANSWER_CLASSES:
        assert (P + "lookups_total", (("answer", answer),)) in samples
    for result in ("ok", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"):
        assert (P + "policy_fetches_total", (("result", result),)) in samples
    for transport in ("mail", "https"):
        assert (P + "tlsrpt_reports_sent_total", (("transport", transport),)) in samples
        assert (P + "tlsrpt_reports_failed_total", (("transport", transport),)) in samples
    assert (P + "probes_total", (("result", "certificate-expired"),)) in samples
    assert samples[(P + "build_info", (("version", __version__),))] == 1
    for scalar in (
        "cache_hits_total",
        "cache_misses_total",
        "refresh_failures_total",
        "tlsrpt_datagrams_received_total",
        "tlsrpt_datagrams_rejected_total",
        "tlsrpt_events_stored_total",
        "testing_mismatches_total",
        "cache_entries",
        "answer_duration_seconds_count",
        "answer_duration_seconds_sum",
    ):
        assert P + scalar in names
    assert all(name.startswith(P) for name in names)
    # never a per-domain label on the sending side; the own-domain monitor's gauges (a run of
    # `monitor` tests earlier in the same process fills them) are per own domain by design
    label_names = {
        k for name, labels in samples if not name.startswith(OWN_DOMAIN) for k, _ in labels
    }
    assert label_names <= ALLOWED_LABELS


def test_increments_show_up_in_the_scrape(server: metrics.MetricsServer) -> None:
    before = scrape(server)
    metrics.LOOKUP_NOTFOUND_COLD.inc()
    metrics.CACHE_HITS.inc()
    metrics.CACHE_HITS.inc()
    metrics.REPORTS_FAILED_HTTPS.inc()
    metrics.PROBES.labels(ResultType.CERTIFICATE_NOT_TRUSTED).inc()
    after = scrape(server)
    cold = (P + "lookups_total", (("answer", "notfound-cold"),))
    assert after[cold] - before[cold] == 1
    hits = (P + "cache_hits_total", ())
    assert after[hits] - before[hits] == 2
    failed = (P + "tlsrpt_reports_failed_total", (("transport", "https"),))
    assert after[failed] - before[failed] == 1
    sent = (P + "tlsrpt_reports_sent_total", (("transport", "https"),))
    assert after[sent] == before[sent]
    probe = (P + "probes_total", (("result", "certificate-not-trusted"),))
    assert after[probe] - before[probe] == 1


def test_cache_entries_gauge_set_and_callback() -> None:
    metrics.CACHE_ENTRIES.set(7)
    assert value(P + "cache_entries") == 7
    metrics.CACHE_ENTRIES.set_function(lambda: 1234)
    try:
        assert value(P + "cache_entries") == 1234
    finally:
        metrics.CACHE_ENTRIES.set_function(None)


def test_histogram_bounds_are_inclusive_and_overflow_goes_to_inf() -> None:
    h = metrics.FastHistogram("t_seconds", "t", (0.1, 1.0))
    full = P + "t_seconds"
    for v in (0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    family = h.family()
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1, "1.0": 3, "+Inf": 4}
    sums = {s.name: s.value for s in family.samples if not s.name.endswith("_bucket")}
    assert sums == {full + "_count": 4, full + "_sum": pytest.approx(8.6)}


def test_answer_buckets_span_10us_to_5s() -> None:
    assert metrics.ANSWER_BUCKETS[0] == 1e-5
    assert metrics.ANSWER_BUCKETS[-1] == 5.0
    assert list(metrics.ANSWER_BUCKETS) == sorted(set(metrics.ANSWER_BUCKETS))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=50))
def test_histogram_agrees_with_prometheus_client(observations: list[float]) -> None:
    """The hand-bucketed histogram must expose what prometheus-client's own one would."""
    ours = metrics.FastHistogram("h_seconds", "h", metrics.ANSWER_BUCKETS)
    reference = Histogram(
        "h_seconds", "h", registry=CollectorRegistry(), buckets=metrics.ANSWER_BUCKETS
    )
    for v in observations:
        ours.observe(v)
        reference.observe(v)
    (ref_family,) = reference.collect()

    def buckets(family: prometheus_client.Metric) -> dict[float, float]:
        return {
            float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")
        }

    assert buckets(ours.family()) == buckets(ref_family)
    assert ours.total == pytest.approx(sum(observations))


def test_undeclared_label_value_is_refused() -> None:
    with pytest.raises(ValueError, match="undeclared"):
        metrics.LOOKUPS.labels("example.com")
    with pytest.raises(ValueError):
        metrics.REPORTS_SENT.labels("smtp")


def test_fetch_counter_maps_rfc8460_failure_types() -> None:
    assert metrics.fetch_counter(None) is metrics.FETCH_OK
    assert metrics.fetch_counter(ResultType.STS_POLICY_INVALID) is metrics.FETCH_INVALID
    assert metrics.fetch_counter(ResultType.STS_WEBPKI_INVALID) is metrics.FETCH_WEBPKI_INVALID
    assert metrics.fetch_counter(ResultType.STS_POLICY_FETCH_ERROR) is metrics.FETCH_ERROR
    with pytest.raises(ValueError):
        metrics.fetch_counter(ResultType.DANE_REQUIRED)


def test_own_registry_not_the_global_one() -> None:
    metrics.LOOKUP_ENFORCE.inc()
    global_names = {s.name for f in prometheus_client.REGISTRY.collect() for s in f.samples}
    assert not any(name.startswith(P) for name in global_names)
    assert value(P + "lookups_total", answer="enforce") >= 1


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.0.2.1", "10.0.0.1", "2001:db8::1", "example.com", ""]
)
def test_non_loopback_listener_refused(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        metrics.start_metrics_server(host, 0)


def test_localhost_binds_ipv4_loopback() -> None:
    srv = metrics.start_metrics_server("localhost", 0)
    try:
        assert srv.host == "127.0.0.1"
        assert scrape(srv)[(P + "build_info", (("version", __version__),))] == 1
    finally:
        srv.close()


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback in this environment")
def test_ipv6_loopback_listener() -> None:
    srv = metrics.start_metrics_server("::1", 0)
    try:
        response = httpx.get(f"http://[::1]:{srv.port}/metrics", timeout=5)
        assert P + "lookups_total" in response.text
    finally:
        srv.close()


def test_close_stops_listening() -> None:
    srv = metrics.start_metrics_server("127.0.0.1", 0)
    port = srv.port
    srv.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError):
        metrics.FastHistogram("bad", "b", (1.0, 0.5))
    with pytest.raises(ValueError, match="bounds differ"):
        metrics.ANSWER_SECONDS.set_function((0.1,), lambda: ([0, 0], 0.0))


@pytest.fixture
def unbind() -> Iterator[None]:
    yield
    for vec in (metrics.LOOKUPS, metrics.FETCHES):
        vec.set_function(None)
    for counter in (
        metrics.CACHE_HITS,
        metrics.CACHE_MISSES,
        metrics.REFRESH_FAILURES,
        metrics.TLSRPT_DATAGRAMS_RECEIVED,
        metrics.TLSRPT_DATAGRAMS_REJECTED,
        metrics.TLSRPT_EVENTS_STORED,
    ):
        counter.set_function(None)
    metrics.ANSWER_SECONDS.function = None


def test_bound_lookup_stats_add_to_direct_increments(unbind: None) -> None:
    """Lookup keeps its own ints (lookup_stats.py); the scrape adds them to the module's own."""
    stats = LookupStats()
    base_enforce = value(P + "lookups_total", answer="enforce")
    base_hits = value(P + "cache_hits_total")
    base_count = value(P + "answer_duration_seconds_count")
    base_le = value(P + "answer_duration_seconds_bucket", le="2.5e-05")
    base_memo = value(P + "reply_memo_hits_total")
    metrics.bind_lookup_stats(stats, LATENCY_BUCKETS)
    stats.enforce += 3
    stats.hits += 5
    stats.memo_hits += 7  # enforce answers from the cache, in the lowest latency bucket
    stats.fetch_ok += 1
    stats.count_fetch_failure(ResultType.STS_WEBPKI_INVALID)
    stats.count_fetch_failure(ResultType.VALIDATION_FAILURE)  # undeclared label: not exported
    stats.observe(2e-5)
    stats.observe(9.0)
    metrics.LOOKUP_ENFORCE.inc()
    assert value(P + "lookups_total", answer="enforce") == base_enforce + 4 + 7
    assert value(P + "cache_hits_total") == base_hits + 5 + 7
    assert value(P + "reply_memo_hits_total") == base_memo + 7
    assert value(P + "policy_fetches_total", result="sts-webpki-invalid") >= 1
    assert (
        metrics.REGISTRY.get_sample_value(
            P + "policy_fetches_total", {"result": "validation-failure"}
        )
        is None
    )
    assert value(P + "answer_duration_seconds_count") == base_count + 2 + 7
    assert value(P + "answer_duration_seconds_bucket", le="2.5e-05") == base_le + 1 + 7


def test_rebinding_replaces_the_old_lookup(unbind: None) -> None:
    old, new = LookupStats(), LookupStats()
    old.misses = 1000
    metrics.bind_lookup_stats(old, LATENCY_BUCKETS)
    with_old = value(P + "cache_misses_total")
    metrics.bind_lookup_stats(new, LATENCY_BUCKETS)
    assert value(P + "cache_misses_total") == with_old - 1000


def test_bound_collector_stats(unbind: None) -> None:
    stats = CollectorStats(received=10, rejected=1, oversized=2, backlog_dropped=3)
    stats.events_submitted = 4
    before = value(P + "tlsrpt_datagrams_rejected_total")
    metrics.bind_collector_stats(stats)
    assert value(P + "tlsrpt_datagrams_received_total") >= 10
    assert value(P + "tlsrpt_datagrams_rejected_total") == before + 6
    assert value(P + "tlsrpt_events_stored_total") >= 4


def test_probe_results_cover_success_failures_and_transient() -> None:
    declared = set(metrics.PROBES.children)
    assert {"success", "transient", "certificate-host-mismatch", "starttls-not-supported"} <= (
        declared
    )
    assert not declared & {"sts-policy-fetch-error", "dane-required"}
