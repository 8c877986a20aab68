"""What the operator sees of the shadow's probe verdicts: metrics and once-a-day warnings.

Separate from the probe rounds because its rules are about noise, not about probing: a verdict
is counted once however many testing domains share the MX host, and an MX host that would fail
is logged at WARNING once per domain, MX and UTC day (a domain owner fixing it needs the line,
not one per round).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from mta_sts_policyd import metrics
from mta_sts_policyd.probe.result import ProbeResult
from mta_sts_policyd.tlsrpt.shadow.label import probe_label

log = logging.getLogger(__name__)

_DAY = 86400


class VerdictAlerts:
    """Counts probe verdicts (`metrics.PROBES`) and warns of testing-mode MX hosts that fail."""

    def __init__(self, clock: Callable[[], float], *, max_hosts: int) -> None:
        self._clock = clock
        self._max_hosts = max_hosts
        self._counted: dict[str, float] = {}
        self._warned: set[tuple[str, str]] = set()
        self._warned_day = -1

    def count(self, result: ProbeResult) -> None:
        """metrics.PROBES once per network verdict, however many domains share the MX."""
        if self._counted.get(result.mx_host) == result.checked_at:
            return
        if len(self._counted) >= self._max_hosts:
            self._counted.clear()
        self._counted[result.mx_host] = result.checked_at
        with contextlib.suppress(ValueError):  # a result type the metric does not declare
            metrics.PROBES.labels(probe_label(result)).inc()

    def warn_once(self, domain: str, verdict: ProbeResult) -> bool:
        """Log a failing MX of a testing domain unless already logged today; True if logged."""
        day = int(self._clock() // _DAY)
        if day != self._warned_day:
            self._warned.clear()
            self._warned_day = day
        key = (domain, verdict.mx_host)
        if key in self._warned:
            return False
        self._warned.add(key)
        metrics.TESTING_MISMATCHES.inc()
        log.warning(
            "event=testing-mx-would-fail domain=%s mx=%s result=%s reason=%r",
            domain,
            verdict.mx_host,
            verdict.result_type,
            verdict.reason,
        )
        return True
