"""The one refresh rule (policy/refresh_rule.py), local and fleet-wide, as properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.policy import refresh_rule

domains = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).map(
    lambda label: f"{label}.test"
)
seconds = st.integers(min_value=0, max_value=10**9).map(float)
spans = st.integers(min_value=0, max_value=366 * 86400).map(float)
max_ages = st.integers(min_value=0, max_value=31_557_600)


@given(domains, spans)
def test_jitter_is_per_domain_and_within_the_spread(domain: str, spread: float) -> None:
    j = refresh_rule.jitter(domain, spread)
    assert j == refresh_rule.jitter(domain, spread)  # every node, every run
    assert 0 <= j < max(1.0, spread)


@given(domains, seconds, seconds, max_ages, spans, spans, spans)
def test_due_at_is_the_local_rule(
    domain: str,
    fetched_at: float,
    failed_at: float,
    max_age: int,
    interval: float,
    spread: float,
    backoff: float,
) -> None:
    """Due at `due_at` exactly when the policy is older than its age limit (the interval plus
    jitter, or 3/4 of a shorter max_age) and the last failure is `backoff` old."""
    due = refresh_rule.due_at(domain, fetched_at, failed_at, max_age, interval=interval,
                              spread=spread, backoff=backoff)  # fmt: skip
    limit = min(interval + refresh_rule.jitter(domain, spread), 0.75 * max_age)
    for now in (due - 1, due, due + 1):
        rule = now - fetched_at >= limit and now - failed_at >= backoff
        assert (now >= due) == rule


@given(domains, seconds, max_ages, spans, spans, st.integers(min_value=1, max_value=10**6))
def test_the_safety_net_is_later_but_before_expiry(
    domain: str, fetched_at: float, max_age: int, interval: float, spread: float, slack: int
) -> None:
    """A fleet node's own refresh (slack) never comes before the fleet's due time, and for a
    policy that lives at all it comes before the policy expires."""
    kw = {"interval": interval, "spread": spread, "backoff": 0.0}
    fleet = refresh_rule.due_at(domain, fetched_at, 0.0, max_age, **kw)
    own = refresh_rule.due_at(domain, fetched_at, 0.0, max_age, slack=slack, **kw)
    assert own >= fleet
    if max_age > 0:
        assert own < fetched_at + max_age
    assert refresh_rule.due_at(domain, fetched_at, 0.0, None, slack=slack, **kw) == (
        fetched_at + interval + refresh_rule.jitter(domain, spread) + slack
    )
