"""Discovery failures counted once per delivery session, not once per socketmap lookup.

RFC 8460 §4.3 counts sessions. A failed policy discovery of a domain with no policy in force
makes the daemon answer NOTFOUND, Postfix delivers as if the domain had none, and the session
arrives (libtlsrpt datagram or log line) as `no-policy-found`. One delivery may cost several
lookups (Postfix's, an operator's `postmap -q`, a retry), so counting lookups counts too often.

With a session source configured, the resolver's failures are only noted here (runs of failed
lookups per domain), and each `no-policy-found` session of a domain whose lookups were failing
when the session happened becomes one failure session carrying that discovery failure. "When":
from the run's first failed lookup (less SLACK: whole-second log stamps) to WINDOW seconds after
its last one (a delivery's connection attempts follow its lookup), and only while no policy was
in force (a fixed domain's next lookup brings one). Pure: times come with the events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from mta_sts_policyd.tlsrpt.model import EventSink, PolicyType, SessionEvent

SLACK = 2.0
WINDOW = 600.0
RUNS = 4
"""Runs of failed lookups kept per domain (older ones can no longer match a session)."""
MAX_DOMAINS = 100_000

PolicyInForce = Callable[[str, float], bool]
"""(domain, unix time) -> did the daemon have a policy for it in force then?"""


@dataclass(frozen=True, slots=True)
class _Run:
    first: float
    last: float
    failure: SessionEvent
    """The failure event of the run's latest lookup (its type and reason are reported)."""


class FailureSessions:
    """EventSink in front of the store: no-policy-found sessions of failing domains become
    failures. `note` runs on the event loop; `submit` on any thread (immutable runs)."""

    def __init__(
        self,
        inner: EventSink,
        policy_in_force: PolicyInForce,
        *,
        window: float = WINDOW,
        max_domains: int = MAX_DOMAINS,
    ) -> None:
        self.inner = inner
        self.policy_in_force = policy_in_force
        self.window = window
        self.max_domains = max_domains
        self.converted = 0
        """Sessions counted as discovery failures."""
        self._runs: dict[str, tuple[_Run, ...]] = {}

    def note(self, failure: SessionEvent) -> None:
        """A failed lookup (the failure event it would have counted by itself)."""
        domain, at = failure.report_domain, failure.timestamp
        runs = self._runs.pop(domain, ())
        if runs and at <= runs[-1].last + self.window:
            last = runs[-1]
            runs = (*runs[:-1], _Run(min(last.first, at), max(last.last, at), failure))
        else:
            runs = (*runs, _Run(at, at, failure))[-RUNS:]
        self._runs[domain] = runs  # re-inserted: the dict stays ordered by last failure
        if len(self._runs) > self.max_domains:
            del self._runs[next(iter(self._runs))]

    def submit(self, event: SessionEvent) -> None:
        self.inner.submit(self.counted_as(event))

    def counted_as(self, event: SessionEvent) -> SessionEvent:
        """The session as it is, or as the discovery failure its domain had then."""
        if event.policy.policy_type is not PolicyType.NO_POLICY_FOUND:
            return event
        at = event.timestamp
        runs = self._runs.get(event.report_domain, ())
        run = next((r for r in runs if r.first - SLACK <= at <= r.last + self.window), None)
        if run is None or self.policy_in_force(event.report_domain, at):
            return event
        self.converted += 1
        return replace(
            run.failure,
            timestamp=at,
            count=event.count,
            tlsrpt_record=event.tlsrpt_record or run.failure.tlsrpt_record,
        )
