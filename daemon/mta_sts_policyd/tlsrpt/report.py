"""RFC 8460 §4 report document: one object from which JSON, filename, Subject and text derive.

Pure: no I/O, no clock. Deriving every name from one `ReportDocument` is what keeps the Subject,
filename, headers and body consistent (RFC 8460 §5.6).

Size rule (docs/conformance.md: RPT-size-bound; Stalwart's default is 5 MiB): when the JSON exceeds
`max_report_bytes`, failure-detail entries are dropped, lowest `failed-session-count` first (ties:
the later entry in report order), across all policies. Policies and their summaries are never
dropped, so the totals stay exact; `dropped_details` says how many entries went.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from mta_sts_policyd.tlsrpt.model import DomainDay, FailureDetail, PolicyAggregate
from mta_sts_policyd.tlsrpt.normalize import hostname, normalize_detail, report_name

MAX_REPORT_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """Who we are in reports (RFC 8460 §4.4, §5.1, §5.3)."""

    organization_name: str
    contact_info: str
    """An addr-spec; its domain is the submitter (TLS-Report-Submitter, filename sender)."""
    submitter: str | None = None
    """Optional explicit submitter; must equal the contact-info domain (RFC 8460 §5.3)."""
    max_report_bytes: int = MAX_REPORT_BYTES

    def __post_init__(self) -> None:
        local, at, domain = self.contact_info.rpartition("@")
        if not at or not local or "." not in domain or " " in self.contact_info:
            raise ValueError(f"contact_info {self.contact_info!r} is not an e-mail address")
        if self.submitter is not None and report_name(self.submitter) != self.submitter_domain:
            raise ValueError("submitter must equal the domain of contact_info (RFC 8460 §5.3)")
        if not self.organization_name.strip():
            raise ValueError("organization_name must not be empty")

    @property
    def submitter_domain(self) -> str:
        return report_name(self.contact_info.rpartition("@")[2])


@dataclass(frozen=True, slots=True)
class ReportDocument:
    """One report for one (day, report domain, TLSRPT record)."""

    day: date
    report_domain: str
    tlsrpt_record: str | None
    organization_name: str
    contact_info: str
    submitter: str
    policies: tuple[PolicyAggregate, ...]
    dropped_details: int = 0
    _json: bytes = field(default=b"", repr=False, compare=False)

    @property
    def unique_id(self) -> str:
        """Letters/digits only (RFC 8460 §5.1); deterministic so a retry reuses it (RFC 8460
        §4.4)."""
        key = "\0".join(
            (self.day.isoformat(), self.report_domain, self.tlsrpt_record or "", self.submitter)
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def report_id(self) -> str:
        """Valid msg-id content (dot-atom@domain, RFC 8460 §5.3), so the Subject can carry it as
        is."""
        return f"{self.day:%Y%m%d}.{self.report_domain}.{self.unique_id}@{self.submitter}"

    @property
    def begin(self) -> datetime:
        return datetime.combine(self.day, time(0, 0, 0), UTC)

    @property
    def end(self) -> datetime:
        """23:59:59Z of the same day, as Google/sys4/mox do (RFC 8460 §4.1)."""
        return self.begin + timedelta(days=1, seconds=-1)

    @property
    def filename(self) -> str:
        """RFC 8460 §5.1: sender!policy-domain!begin!end!unique-id.json.gz."""
        b, e = int(self.begin.timestamp()), int(self.end.timestamp())
        return f"{self.submitter}!{self.report_domain}!{b}!{e}!{self.unique_id}.json.gz"

    @property
    def subject(self) -> str:
        return (
            f"Report Domain: {self.report_domain} Submitter: {self.submitter} "
            f"Report-ID: <{self.report_id}>"
        )

    @property
    def json_bytes(self) -> bytes:
        return self._json or render_json(self)

    def gzip_bytes(self) -> bytes:
        """Deterministic gzip (mtime 0, no filename) so identical reports are identical bytes."""
        return gzip.compress(self.json_bytes, compresslevel=9, mtime=0)

    def text_body(self) -> str:
        ok = sum(p.successes for p in self.policies)
        bad = sum(p.failures for p in self.policies)
        lines = [
            f"This is an aggregate TLS report from {self.organization_name}.",
            "",
            f"Report domain: {self.report_domain}",
            f"Period:        {self.begin:%Y-%m-%dT%H:%M:%SZ} to {self.end:%Y-%m-%dT%H:%M:%SZ}",
            f"Policies:      {len(self.policies)}",
            f"Successful TLS sessions: {ok}",
            f"Failed TLS sessions:     {bad}",
            f"Report-ID:     {self.report_id}",
            "",
            "The machine-readable report (RFC 8460) is attached as " + self.filename,
        ]
        if self.dropped_details:
            lines.append(
                f"{self.dropped_details} failure-detail entries were left out "
                "to keep the report under the size limit."
            )
        return "\n".join(lines) + "\n"


def date_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def policy_json(agg: PolicyAggregate, report_domain: str) -> dict[str, Any]:
    """One `policies[]` entry; empty optional arrays are omitted (as Google does)."""
    pol: dict[str, Any] = {"policy-type": str(agg.policy.policy_type)}
    if agg.policy.policy_strings:
        pol["policy-string"] = list(agg.policy.policy_strings)
    # RPT-4.4-a-labels, RPT-4.4-policy-domain-always: always present, always an A-label.
    pol["policy-domain"] = hostname(agg.policy.policy_domain) or report_domain
    mx_hosts = [h for h in map(hostname, agg.policy.mx_hosts) if h]
    if mx_hosts:
        pol["mx-host"] = mx_hosts
    entry: dict[str, Any] = {
        "policy": pol,
        "summary": {
            "total-successful-session-count": agg.successes,
            "total-failure-session-count": agg.failures,
        },
    }
    details = []
    for detail, count in agg.details:
        d: dict[str, Any] = {"result-type": str(detail.result_type)}
        for key, value in (
            ("sending-mta-ip", detail.sending_mta_ip),
            ("receiving-mx-hostname", detail.receiving_mx_hostname),
            ("receiving-mx-helo", detail.receiving_mx_helo),
            ("receiving-ip", detail.receiving_ip),
            ("failed-session-count", count),
            ("additional-information", detail.additional_information),
            ("failure-reason-code", detail.failure_reason_code),
        ):
            if value is not None and value != "":
                d[key] = value
        details.append(d)
    if details:
        entry["failure-details"] = details
    return entry


def report_json(doc: ReportDocument) -> dict[str, Any]:
    return {
        "organization-name": doc.organization_name,
        "date-range": {"start-datetime": date_time(doc.begin), "end-datetime": date_time(doc.end)},
        "contact-info": doc.contact_info,
        "report-id": doc.report_id,
        "policies": [policy_json(p, doc.report_domain) for p in doc.policies],
    }


def render_json(doc: ReportDocument) -> bytes:
    return json.dumps(report_json(doc), ensure_ascii=False, indent=None).encode()


def build_report(dd: DomainDay, settings: ReportSettings) -> ReportDocument:
    """The report for one DomainDay; details ordered by count (desc), size-bounded."""
    policies = tuple(
        PolicyAggregate(p.policy, p.successes, p.failures, _merged(p.details))
        for p in sorted(dd.policies, key=_policy_order)
    )
    doc = ReportDocument(
        day=dd.day,
        report_domain=report_name(dd.report_domain),
        tlsrpt_record=dd.tlsrpt_record,
        organization_name=settings.organization_name,
        contact_info=settings.contact_info,
        submitter=settings.submitter_domain,
        policies=policies,
    )
    return _bounded(doc, settings.max_report_bytes)


def _merged(
    details: tuple[tuple[FailureDetail, int], ...],
) -> tuple[tuple[FailureDetail, int], ...]:
    """Normalised details, equal ones merged, highest count first, then a stable order."""
    merged: dict[FailureDetail, int] = {}
    for detail, count in details:
        key = normalize_detail(detail)
        merged[key] = merged.get(key, 0) + count
    return tuple(sorted(merged.items(), key=lambda dc: (-dc[1], _detail_order(dc[0]))))


def _detail_order(d: FailureDetail) -> tuple[str, ...]:
    return tuple(
        "" if v is None else str(v)
        for v in (
            d.result_type,
            d.receiving_mx_hostname,
            d.receiving_ip,
            d.sending_mta_ip,
            d.receiving_mx_helo,
            d.failure_reason_code,
            d.additional_information,
        )
    )


def _policy_order(p: PolicyAggregate) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    r = p.policy
    return (str(r.policy_type), r.policy_domain, r.policy_strings, r.mx_hosts)


def _bounded(doc: ReportDocument, limit: int) -> ReportDocument:
    body = render_json(doc)
    if len(body) <= limit:
        return replace(doc, dropped_details=0, _json=body)
    # Rank every detail by (count, position); drop from the smallest until it fits.
    ranked = sorted(
        (
            (count, -pi, -di)
            for pi, p in enumerate(doc.policies)
            for di, (_, count) in enumerate(p.details)
        ),
    )
    sizes = {
        (pi, di): len(
            json.dumps(
                policy_json(PolicyAggregate(p.policy, 0, 0, (dc,)), "x")["failure-details"][0],
                ensure_ascii=False,
            )
        )
        + 2
        for pi, p in enumerate(doc.policies)
        for di, dc in enumerate(p.details)
    }
    excess = len(body) - limit
    drop: set[tuple[int, int]] = set()
    for _, npi, ndi in ranked:
        if excess <= 0:
            break
        drop.add((-npi, -ndi))
        excess -= sizes[(-npi, -ndi)]
    while True:
        trimmed = _without(doc, drop)
        body = render_json(trimmed)
        if len(body) <= limit or len(drop) == len(ranked):
            return replace(trimmed, dropped_details=len(drop), _json=body)
        for _, npi, ndi in ranked:  # estimate was short (separators): drop one more
            if (-npi, -ndi) not in drop:
                drop.add((-npi, -ndi))
                break


def _without(doc: ReportDocument, drop: set[tuple[int, int]]) -> ReportDocument:
    policies = tuple(
        PolicyAggregate(
            p.policy,
            p.successes,
            p.failures,
            tuple(dc for di, dc in enumerate(p.details) if (pi, di) not in drop),
        )
        for pi, p in enumerate(doc.policies)
    )
    return replace(doc, policies=policies, dropped_details=len(drop))
