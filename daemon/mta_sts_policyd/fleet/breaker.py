"""The circuit breaker that takes Redis off the answer path while it is down or slow.

Closed: calls go through. After `failures` failures in a row it opens: no call at all reaches
Redis (a dead server costs nothing per lookup, not a timeout each) until `reset` seconds have
passed; then one trial call is let through (half open): success closes it, failure opens it
again for another `reset`. Pure state: the clock is injected, the listener hears each change
once (the caller logs it and sets the metric).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


BreakerListener = Callable[[BreakerState, BreakerState, str], None]
"""(before, after, reason) on every state change."""


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        reset: float,
        clock: Callable[[], float],
        on_change: BreakerListener | None = None,
    ) -> None:
        if failures < 1 or reset <= 0:
            raise ValueError("a breaker needs failures >= 1 and reset > 0")
        self.threshold = failures
        self.reset = reset
        self.clock = clock
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self.failures_in_row = 0
        self.opened_at = 0.0
        self._trial_running = False

    def allow(self) -> bool:
        """May a call go to Redis now? In the half-open state only one trial at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock() - self.opened_at < self.reset:
                return False
            self._change(BreakerState.HALF_OPEN, "trial call after the reset time")
        if self._trial_running:
            return False
        self._trial_running = True
        return True

    def succeeded(self) -> None:
        self.failures_in_row = 0
        self._trial_running = False
        if self.state is not BreakerState.CLOSED:
            self._change(BreakerState.CLOSED, "a call succeeded")

    def failed(self, reason: str) -> None:
        self.failures_in_row += 1
        self._trial_running = False
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures_in_row >= self.threshold
        ):
            self.opened_at = self.clock()
            self._change(BreakerState.OPEN, reason)

    def abandoned(self) -> None:
        """A call that was let through ended without a verdict (cancelled): free the trial."""
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        return self.state is not BreakerState.CLOSED

    def _change(self, state: BreakerState, reason: str) -> None:
        before, self.state = self.state, state
        if self.on_change is not None:
            self.on_change(before, state, reason)
