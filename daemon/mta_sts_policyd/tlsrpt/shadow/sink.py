"""The event sink in front of the store when the testing-mode shadow runs (issue 6 §3).

Why events wait here: a testing domain's first lookup starts its probe round at the start of
the very delivery whose session is then reported. Without a verdict `TestingShadow.relabel`
leaves that session a `no-policy-found` success, wrong in the domain's report. So a session
that `relabel` cannot decide while its domain's round is running (or due) is held and relabelled
when the round ends.

Bounded: at most `max_per_domain` sessions per domain and `max_held` in all wait, none longer
than `max_hold` seconds; beyond that a session is handed on as it is and counted. A session is
never lost, at worst left unrelabelled; `close` hands on whatever still waits (SIGTERM).

Threads: `submit` runs on the collector's thread and on the loop; rounds end on the loop. The
decision to hold is re-checked under the lock, and the shadow calls its round listeners only
after the round's new state is in and the domain has left the running set: an event either
sees the new verdicts or is held before the listener takes the lock to release it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from mta_sts_policyd.tlsrpt.model import EventSink, SessionEvent

__all__ = ["HoldStats", "Relabeler", "RelabelingSink"]

log = logging.getLogger(__name__)

_Held = list[tuple[float, SessionEvent]]
"""(monotonic time held, event), oldest first."""


@dataclass
class HoldStats:
    held: int = 0
    """Sessions that waited for their domain's probe round."""
    released: int = 0
    """Handed on (relabelled if the round judged them) when the round ended."""
    overflow: int = 0
    """Handed on unchanged at once: a cap was reached."""
    expired: int = 0
    """Handed on after `max_hold` seconds without the round ending."""
    flushed: int = 0
    """Handed on by `close`."""


class Relabeler(Protocol):
    """What the sink needs of the shadow (checker.py's `TestingShadow`): declared here so the
    sink does not import the shadow that is built around it."""

    def relabel(self, event: SessionEvent) -> SessionEvent: ...

    def round_pending(self, event: SessionEvent) -> bool: ...

    def request_round(self, domain: str) -> bool: ...

    def add_round_listener(self, listener: Callable[[str], None]) -> None: ...


class _Outcome(Enum):
    HELD = "held"
    ENDED = "ended"  # the round ended meanwhile: relabel again
    FULL = "full"


class RelabelingSink:
    """EventSink wrapper: every event passes `TestingShadow.relabel` before the inner sink,
    waiting for a probe round that is about to judge it. Build it on the event loop."""

    def __init__(
        self,
        inner: EventSink,
        shadow: Relabeler,
        *,
        max_hold: float = 60.0,
        max_per_domain: int = 1_000,
        max_held: int = 10_000,
        close_grace: float = 5.0,
    ) -> None:
        self.inner = inner
        self.shadow = shadow
        self.max_hold = max_hold
        self.max_per_domain = max_per_domain
        self.max_held = max_held
        self.close_grace = close_grace
        self.stats = HoldStats()
        self._clock = time.monotonic
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._count = 0
        self._armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._drained: asyncio.Event | None = None
        shadow.add_round_listener(self._release)

    @property
    def held(self) -> int:
        """Sessions waiting now."""
        return self._count

    def submit(self, event: SessionEvent) -> None:
        try:
            out = self._relabel_or_hold(event)
        except Exception:  # a relabeling bug must not lose the session
            log.exception("event=relabel-crashed domain=%s", event.report_domain)
            out = event
        if out is not None:
            self.inner.submit(out)

    def _relabel_or_hold(self, event: SessionEvent) -> SessionEvent | None:
        relabeled = self.shadow.relabel(event)
        if relabeled is not event or self._closed or not self.shadow.round_pending(event):
            return relabeled
        outcome = self._hold(event)
        if outcome is _Outcome.ENDED:
            return self.shadow.relabel(event)
        if outcome is _Outcome.FULL:
            return event
        try:  # held: nothing below may hand the event on a second time
            self.shadow.request_round(event.report_domain)
            self._arm()
        except Exception:
            log.exception("event=hold-timer-failed domain=%s", event.report_domain)
        return None

    def _hold(self, event: SessionEvent) -> _Outcome:
        domain = event.report_domain
        with self._lock:
            if self._closed or not self.shadow.round_pending(event):
                return _Outcome.ENDED
            waiting = self._held.get(domain)
            if self._count >= self.max_held or len(waiting or ()) >= self.max_per_domain:
                self.stats.overflow += 1
                return _Outcome.FULL
            if waiting is None:
                waiting = self._held[domain] = []
            waiting.append((self._clock(), event))
            self._count += 1
            self.stats.held += 1
        return _Outcome.HELD

    # --- handing on (the event loop) ----------------------------------------------------------

    def _release(self, domain: str) -> None:
        """Round listener: the domain's round ended (new verdicts are in)."""
        with self._lock:
            waiting = self._held.pop(domain, [])
            self._count -= len(waiting)
            self.stats.released += len(waiting)
        if waiting:  # once per round at most: sessions that would have been mislabelled
            log.info("event=testing-sessions-released domain=%s sessions=%d", domain, len(waiting))
        self._hand_on(event for _, event in waiting)
        self._check_drained()

    def _arm(self) -> None:
        """Make sure a timer will expire the oldest held event (any thread)."""
        with self._lock:
            if self._armed or self._closed:
                return
            self._armed = True
        try:
            self._loop.call_soon_threadsafe(self._schedule)
        except RuntimeError:  # the loop is closed; close() hands on what waits
            with self._lock:
                self._armed = False

    def _schedule(self) -> None:
        with self._lock:
            oldest = min((w[0][0] for w in self._held.values()), default=None)
            if oldest is None or self._closed:
                self._armed = False
                return
        delay = max(0.0, oldest + self.max_hold - self._clock())
        self._timer = self._loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        deadline = self._clock() - self.max_hold
        expired: list[SessionEvent] = []
        with self._lock:
            self._timer, self._armed = None, False
            for domain, waiting in list(self._held.items()):
                while waiting and waiting[0][0] <= deadline:
                    expired.append(waiting.pop(0)[1])
                if not waiting:
                    del self._held[domain]
            self._count -= len(expired)
            self.stats.expired += len(expired)
            more = self._count > 0
        if expired:
            log.info("event=testing-hold-expired sessions=%d", len(expired))
        self._hand_on(expired)
        self._check_drained()
        if more:
            self._arm()

    def _check_drained(self) -> None:
        if self._drained is not None and not self._count:
            self._drained.set()

    def _hand_on(self, events: Iterable[SessionEvent]) -> None:
        for event in events:
            try:
                event = self.shadow.relabel(event)
            except Exception:
                log.exception("event=relabel-crashed domain=%s", event.report_domain)
            self.inner.submit(event)

    # --- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Hand on every held event (relabelled if its verdict is in); later events pass."""
        with self._lock:
            self._closed = True
            waiting = [event for w in self._held.values() for _, event in w]
            self._held.clear()
            self._count = 0
            self.stats.flushed += len(waiting)
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._hand_on(waiting)

    async def aclose(self) -> None:
        """Give running rounds up to `close_grace` seconds to judge held events, then `close`."""
        if self._count:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.close_grace)
        self.close()
