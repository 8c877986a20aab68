"""A TLS report received for one of the operator's own domains, as stored (RFC 8460 §4).

Pure data. Names are A-labels (tlsrpt.normalize), addresses in RFC 5952 form, times in UTC.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime

FAILURE_RESULTS_BLOCKING_ENFORCE = frozenset(
    {
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
        "sts-policy-fetch-error",
        "sts-policy-invalid",
        "sts-webpki-invalid",
    }
)
"""Failures that `enforce` would turn into deferred mail (RFC 8461 §5, RFC 8460 §4.3)."""


def policy_hash(lines: tuple[str, ...] | list[str]) -> str:
    """A short hash of a policy's lines: how reports and the served file are matched.

    The TXT id is not part of a report, so the policy text identifies it; lines are compared
    without surrounding space and blank lines, in order, as the policy file has them.
    """
    clean = [line.strip() for line in lines if line.strip()]
    if not clean:
        return ""
    return hashlib.sha256("\n".join(clean).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ReceivedFailure:
    result_type: str
    count: int
    receiving_mx: str | None = None
    receiving_ip: str | None = None
    sending_ip: str | None = None
    receiving_helo: str | None = None
    reason_code: str | None = None
    additional_information: str | None = None


@dataclass(frozen=True, slots=True)
class ReceivedPolicy:
    policy_type: str
    """`sts`, `tlsa` or `no-policy-found` (RFC 8460 §4.4)."""
    policy_domain: str
    policy_strings: tuple[str, ...]
    mx_hosts: tuple[str, ...]
    successes: int
    failures: int
    details: tuple[ReceivedFailure, ...]

    @property
    def mode(self) -> str | None:
        """The `mode:` of an STS policy string, when the sender included it."""
        for line in self.policy_strings:
            key, _, value = line.partition(":")
            if key.strip().lower() == "mode":
                return value.strip().lower() or None
        return None

    @property
    def policy_hash(self) -> str:
        """Which policy the sender saw ('' when it sent no policy string)."""
        return policy_hash(self.policy_strings)


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    organization: str
    report_id: str
    contact: str
    start: datetime
    end: datetime
    policies: tuple[ReceivedPolicy, ...]

    @property
    def day(self) -> date:
        """The UTC day the report counts for: the day its range starts (RFC 8460 §4.1)."""
        return self.start.date()

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(p.policy_domain for p in self.policies)


@dataclass(frozen=True, slots=True)
class PolicyDay:
    """What one organisation reported about one policy of a domain on one day."""

    day: date
    organization: str
    policy_type: str
    policy_hash: str
    mode: str | None
    policy_text: str
    successes: int
    failures: int


@dataclass(frozen=True, slots=True)
class FailureDay:
    day: date
    organization: str
    policy_hash: str
    result_type: str
    receiving_mx: str | None
    count: int


@dataclass(frozen=True, slots=True)
class CountedDays:
    """A domain's stored days as `summary`, `readiness` and the `enforce` gate count them at
    one `now`: the reports whose range starts later left out, and how many those were."""

    policies: list[PolicyDay] = field(default_factory=list)
    failures: list[FailureDay] = field(default_factory=list)
    not_counted_future: int = 0
