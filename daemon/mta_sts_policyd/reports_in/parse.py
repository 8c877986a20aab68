"""RFC 8460 §4 report JSON -> ReceivedReport, strict where it matters, tolerant where senders are.

Pure: bytes in, a report or ReportRejected (with the reason) out; never any other exception,
whatever the input (a hypothesis property holds it to that).

Tolerated deviations of real senders (docs/reports-in.md lists them):
- date-times without a zone designator (`2026-11-30T00:00:00`) are read as UTC, and a
  space instead of `T` is accepted;
- `report-id` in angle brackets (`<id@host>`) or without them is the same id;
- `mx-host` as a single string instead of a list;
- `failure-details` missing, `null` or empty; detail fields missing or `null`;
- `no-policy-found` policies without `policy-string` or `policy-domain` casing as sent;
- counts sent as numeric strings (`"12"`).
Anything else (missing organisation, report-id, date-range, policies, summary counts, a
negative count, a policy domain that is no host name) rejects the report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mta_sts_policyd.errors import ReportRejected
from mta_sts_policyd.reports_in.model import ReceivedFailure, ReceivedPolicy, ReceivedReport
from mta_sts_policyd.tlsrpt.normalize import bound_text, hostname, ip_text

MAX_POLICIES = 1_000
MAX_DETAILS = 10_000
MAX_COUNT = 10**12
POLICY_TYPES = ("sts", "tlsa", "no-policy-found")


def parse_report(data: bytes) -> ReceivedReport:
    """One report document (already gunzipped)."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ReportRejected(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReportRejected("the report is not a JSON object")
    date_range = _field(doc, "date-range", dict)
    start = _datetime(date_range, "start-datetime")
    end = _datetime(date_range, "end-datetime")
    if end < start:
        raise ReportRejected("date-range ends before it starts")
    policies = _field(doc, "policies", list)
    if not policies or len(policies) > MAX_POLICIES:
        raise ReportRejected(f"policies: 1 to {MAX_POLICIES} entries expected")
    return ReceivedReport(
        organization=_text(doc, "organization-name"),
        report_id=_text(doc, "report-id").strip().removeprefix("<").removesuffix(">").strip(),
        contact=bound_text(_optional_str(doc, "contact-info")) or "",
        start=start,
        end=end,
        policies=tuple(_policy(entry, i) for i, entry in enumerate(policies)),
    )


def _policy(entry: Any, index: int) -> ReceivedPolicy:
    where = f"policies[{index}]"
    if not isinstance(entry, dict):
        raise ReportRejected(f"{where} is not an object")
    policy = _field(entry, "policy", dict, where)
    summary = _field(entry, "summary", dict, where)
    policy_type = _text(policy, "policy-type", where).lower()
    if policy_type not in POLICY_TYPES:
        raise ReportRejected(f"{where}.policy-type {policy_type!r} is not one of {POLICY_TYPES}")
    domain = hostname(_text(policy, "policy-domain", where))
    if domain is None or domain.startswith("*."):
        raise ReportRejected(f"{where}.policy-domain is not a domain name")
    details = entry.get("failure-details") or []
    if not isinstance(details, list) or len(details) > MAX_DETAILS:
        raise ReportRejected(f"{where}.failure-details: a list of at most {MAX_DETAILS} expected")
    return ReceivedPolicy(
        policy_type=policy_type,
        policy_domain=domain,
        policy_strings=_strings(policy.get("policy-string"), f"{where}.policy-string"),
        mx_hosts=tuple(
            h for h in map(hostname, _strings(policy.get("mx-host"), f"{where}.mx-host")) if h
        ),
        successes=_count(summary, "total-successful-session-count", where),
        failures=_count(summary, "total-failure-session-count", where),
        details=tuple(_detail(d, f"{where}.failure-details[{i}]") for i, d in enumerate(details)),
    )


def _detail(entry: Any, where: str) -> ReceivedFailure:
    if not isinstance(entry, dict):
        raise ReportRejected(f"{where} is not an object")
    return ReceivedFailure(
        result_type=_text(entry, "result-type", where).lower(),
        count=_count(entry, "failed-session-count", where),
        receiving_mx=hostname(_optional_str(entry, "receiving-mx-hostname")),
        receiving_ip=ip_text(_optional_str(entry, "receiving-ip")),
        sending_ip=ip_text(_optional_str(entry, "sending-mta-ip")),
        receiving_helo=bound_text(_optional_str(entry, "receiving-mx-helo")),
        reason_code=bound_text(_optional_str(entry, "failure-reason-code")),
        additional_information=bound_text(_optional_str(entry, "additional-information")),
    )


def _field(doc: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        name = f"{where}.{key}" if where else key
        raise ReportRejected(f"{name} is missing or not a {kind.__name__}")
    return value


def _text(doc: dict[str, Any], key: str, where: str = "") -> str:
    value = bound_text(_optional_str(doc, key))
    if not value:
        raise ReportRejected(f"{f'{where}.' if where else ''}{key} is missing or empty")
    return value


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A list of strings, a single string (a known deviation), or nothing."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReportRejected(f"{where} is not a list of strings")
    return tuple(v for v in (bound_text(v) for v in value) if v)


def _count(doc: dict[str, Any], key: str, where: str) -> int:
    value = doc.get(key, 0 if key == "failed-session-count" else None)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ReportRejected(f"{where}.{key} is missing or not a count")
    return value


def _datetime(doc: dict[str, Any], key: str) -> datetime:
    raw = _optional_str(doc, key)
    if raw is None:
        raise ReportRejected(f"date-range.{key} is missing")
    text = raw.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # a known deviation: no zone means UTC
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ReportRejected(f"date-range.{key} {raw!r} is not an RFC 3339 date-time") from None
