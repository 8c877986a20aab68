"""Precise result types for `sts` failures that only say `validation-failure`.

The mail log of Postfix < 3.10 rarely says more than that a certificate did not verify; the
probe's cached verdict of the named MX host says why (expired, host mismatch, untrusted). A
verdict is used only if it is at most `recheck_interval` older than the session; otherwise a
probe is asked for (at most once per MX host every `retry_interval`) and later sessions of
that MX get the precise type. Runs on any thread (the TLS-RPT collector's included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from mta_sts_policyd.probe.prober import MxProber
from mta_sts_policyd.probe.result import apply_patterns
from mta_sts_policyd.tlsrpt.model import PolicyType, SessionEvent
from mta_sts_policyd.tlsrpt.shadow.label import judged, refinable, refine_detail


class Refiner:
    """Refines `sts` failure details from the prober's cache; `request_probe(host)` must be
    safe to call from any thread (the shadow hands it to its event loop)."""

    def __init__(
        self,
        prober: MxProber,
        request_probe: Callable[[str], None],
        *,
        clock: Callable[[], float],
        recheck_interval: float,
        retry_interval: float,
        max_hosts: int,
    ) -> None:
        self._prober = prober
        self._request_probe = request_probe
        self._clock = clock
        self._recheck = recheck_interval
        self._retry = retry_interval
        self._max_hosts = max_hosts
        self._requested: dict[str, float] = {}

    def refine(self, event: SessionEvent) -> SessionEvent:
        """The event with precise result types where a fresh verdict exists (else itself)."""
        if event.success or event.policy.policy_type is not PolicyType.STS:
            return event
        details = list(event.failures)
        for i, detail in enumerate(details):
            host = refinable(detail)
            if host is None:
                continue
            cached = self._prober.cached(host)
            if (
                cached is None
                or cached.transient
                or cached.checked_at < event.timestamp - self._recheck
            ):
                self._request(host)
                continue
            patterns = event.policy.mx_hosts or None
            details[i] = refine_detail(detail, judged(apply_patterns(cached, patterns)))
        refined = tuple(dict.fromkeys(details))
        if refined == event.failures:
            return event
        return replace(event, failures=refined)

    def _request(self, host: str) -> None:
        """At most one probe request per MX host every `retry_interval` (any thread)."""
        now = self._clock()
        if self._requested.get(host, -self._retry) > now - self._retry:
            return
        if len(self._requested) >= self._max_hosts:
            self._requested.clear()
        self._requested[host] = now
        self._request_probe(host)
