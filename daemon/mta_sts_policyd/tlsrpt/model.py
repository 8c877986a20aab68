"""Value types shared by every TLS-RPT stage: collector/maillog/probe -> store -> report -> deliver.

Pure data; no I/O. Everything is hashable so the store can aggregate by value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Protocol

from mta_sts_policyd.errors import ResultType


class PolicyType(StrEnum):
    TLSA = "tlsa"
    STS = "sts"
    NO_POLICY_FOUND = "no-policy-found"


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """The policy a session was judged against (RFC 8460 §4.4 `policy` object)."""

    policy_type: PolicyType
    policy_domain: str
    """A-label, lower case, no trailing dot; always present (also for no-policy-found)."""
    policy_strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One RFC 8460 `failure-details` key (without the count)."""

    result_type: ResultType
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """One TLS session outcome (or one policy-discovery failure) to be counted.

    `report_domain` is the domain whose `_smtp._tls` record receives the report (the next-hop
    domain); `tlsrpt_record` is the raw TXT text when the producer knows it (libtlsrpt's `pr`),
    else None and the reporter looks it up when the report is built.
    """

    timestamp: float
    """Unix seconds (UTC); decides the report day."""
    report_domain: str
    policy: PolicyRef
    success: bool
    failures: tuple[FailureDetail, ...] = ()
    tlsrpt_record: str | None = None
    count: int = 1


class EventSink(Protocol):
    """Where producers put events. Must never block the caller on disk I/O."""

    def submit(self, event: SessionEvent) -> None: ...


@dataclass(frozen=True, slots=True)
class PolicyAggregate:
    """Counters of one (day, report domain, policy)."""

    policy: PolicyRef
    successes: int
    failures: int
    details: tuple[tuple[FailureDetail, int], ...]


@dataclass(frozen=True, slots=True)
class DomainDay:
    """Everything to report to one domain for one UTC day."""

    day: date
    report_domain: str
    tlsrpt_record: str | None
    policies: tuple[PolicyAggregate, ...]
