"""The probe's verdict type and the pure step after it (the policy's mx patterns).

No I/O: the prober (probe.py) produces these; the CLI, the TLS-RPT shadow and tests consume
them. Turning a verdict into an RFC 8460 failure detail is TLS-RPT's job (tlsrpt/shadow/label.py):
the probe knows nothing of reporting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.sts.match import mx_matches


@dataclass(frozen=True)
class ProbeResult:
    """The verdict on one MX host.

    `ok=False` with `result_type=None` is a transient network problem (timeout, refused, 4xx
    greeting): RFC 8460 §4.3.4 says it need not be reported, so callers must not count it.
    """

    mx_host: str
    address: str | None
    ok: bool
    result_type: ResultType | None
    reason: str
    failure_reason_code: str | None
    tls_version: str | None
    cert_not_after: datetime | None
    cert_names: tuple[str, ...]
    receiving_helo: str | None
    checked_at: float

    @property
    def transient(self) -> bool:
        """Could not probe: neither a pass nor a reportable failure."""
        return not self.ok and self.result_type is None

    def to_json(self) -> dict[str, object]:
        return {
            "mx_host": self.mx_host,
            "address": self.address,
            "ok": self.ok,
            "transient": self.transient,
            "result_type": str(self.result_type) if self.result_type else None,
            "reason": self.reason,
            "failure_reason_code": self.failure_reason_code,
            "tls_version": self.tls_version,
            "cert_not_after": (
                self.cert_not_after.isoformat().replace("+00:00", "Z")
                if self.cert_not_after
                else None
            ),
            "cert_names": list(self.cert_names),
            "receiving_helo": self.receiving_helo,
            "checked_at": self.checked_at,
        }


def apply_patterns(result: ProbeResult, patterns: Sequence[str] | None) -> ProbeResult:
    """RFC 8461 §4.1: an MX no pattern covers fails, whatever its TLS looks like."""
    if patterns is None or any(mx_matches(p, result.mx_host) for p in patterns):
        return result
    listed = ", ".join(patterns) or "none"
    return replace(
        result,
        ok=False,
        result_type=ResultType.VALIDATION_FAILURE,
        reason=f"MX host {result.mx_host} matches none of the policy's mx patterns ({listed})",
        failure_reason_code="mx-host-not-in-policy",
    )
