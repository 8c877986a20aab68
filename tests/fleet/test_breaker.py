"""The circuit breaker: pure state with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.fleet.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(failures: int = 3, reset: float = 10.0) -> tuple[CircuitBreaker, Clock, list[str]]:
    clock, changes = Clock(), []
    breaker = CircuitBreaker(
        failures, reset, clock, lambda a, b, _r: changes.append(f"{a.value}>{b.value}")
    )
    return breaker, clock, changes


def test_opens_after_the_failures_in_a_row_and_refuses_without_a_call() -> None:
    breaker, _, changes = make()
    for _ in range(2):
        assert breaker.allow()
        breaker.failed("timeout")
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    breaker.failed("timeout")
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert changes == ["closed>open"]


def test_a_success_resets_the_count() -> None:
    breaker, _, _ = make()
    breaker.failed("x")
    breaker.failed("x")
    breaker.succeeded()
    breaker.failed("x")
    breaker.failed("x")
    assert breaker.state is BreakerState.CLOSED


def test_one_trial_after_the_reset_time_then_closed_or_open_again() -> None:
    breaker, clock, changes = make(failures=1, reset=10.0)
    breaker.failed("refused")
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # only one trial at a time
    breaker.failed("refused again")
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.now += 10.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert changes == ["closed>open", "open>half-open", "half-open>open", "open>half-open",
                       "half-open>closed"]  # fmt: skip


def test_an_abandoned_trial_frees_the_slot() -> None:
    breaker, clock, _ = make(failures=1, reset=1.0)
    breaker.failed("x")
    clock.now += 1.0
    assert breaker.allow()
    breaker.abandoned()
    assert breaker.allow()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0, Clock())
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0, Clock())


@given(st.lists(st.sampled_from(["ok", "fail", "tick", "ask"]), max_size=60))
def test_property_no_call_while_open_and_changes_alternate(steps: list[str]) -> None:
    """Whatever happens: a refused call only while not closed; every reported change is a real
    change, and an open breaker was always entered from a failure."""
    breaker, clock, changes = make(failures=2, reset=5.0)
    for step in steps:
        if step == "tick":
            clock.now += 3.0
        elif step == "ask":
            allowed = breaker.allow()
            if not allowed:
                assert breaker.state is not BreakerState.CLOSED
        elif step == "ok":
            breaker.succeeded()
            assert breaker.state is BreakerState.CLOSED
        else:
            breaker.failed("x")
    for change in changes:
        before, after = change.split(">")
        assert before != after
