"""Finding rules for the policy host, per address, and the policy it serves (RFC 8461 §3.2-3.3).

Pure. The HTTP verdicts come from discovery/policy_fetch.py's own rules and the body from the
project's parser, so `check` objects to exactly what a sender objects to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from mta_sts_policyd.discovery.http_rules import (
    MAX_BODY,
    content_type_problem,
    redirect_problem,
    status_problem,
)
from mta_sts_policyd.errors import PolicySyntaxError, ResultType
from mta_sts_policyd.probe.cert_names import matches_host
from mta_sts_policyd.sts.model import Mode, Policy, TxtRecord
from mta_sts_policyd.sts.policy import parse_policy
from mta_sts_policyd.sts.policy_lint import LintKind, lint_policy
from mta_sts_policyd.tools.check.findings import Finding, Severity, Where, finding
from mta_sts_policyd.tools.check.observations import (
    CertSeen,
    Options,
    PolicyAddressSeen,
    PolicyHostSeen,
)
from mta_sts_policyd.tools.policy_id import IdVerdict, judge_id

ONE_DAY = 86_400
_LINT_CODES = {
    LintKind.BOM: "POLICY_BOM",
    LintKind.MIXED_LINE_ENDINGS: "POLICY_MIXED_LINE_ENDINGS",
    LintKind.DUPLICATE_KEY: "POLICY_DUPLICATE_KEY",
    LintKind.UNKNOWN_KEY: "POLICY_UNKNOWN_KEY",
    LintKind.MAX_AGE_ABOVE_LIMIT: "POLICY_MAX_AGE_RANGE",
}


@dataclass(frozen=True)
class Served:
    """A policy a sender would accept from one address."""

    address: str
    policy: Policy
    body: bytes


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days until expiry (negative once expired)."""
    return int((not_after - now).total_seconds() // ONE_DAY)


def judge_policy_host(
    seen: PolicyHostSeen, options: Options, now: datetime
) -> tuple[list[Finding], list[Served]]:
    """Findings about every address, and the policies that were served acceptably."""
    if seen.error is not None:
        return [finding("DNS_LOOKUP_FAILED", f"{seen.host}: {seen.error}", name=seen.host)], []
    if not seen.addresses:
        return [
            finding(
                "POLICY_HOST_NO_ADDRESS", f"{seen.host} has no A or AAAA record", name=seen.host
            )
        ], []
    out: list[Finding] = []
    served: list[Served] = []
    for address in seen.addresses:
        findings, policy = _address(seen.host, address, options, now)
        out += findings
        if policy is not None and address.body is not None:
            served.append(Served(address.address, policy, address.body))
    out += _consistency(seen)
    return out, served


def _address(
    host: str, seen: PolicyAddressSeen, options: Options, now: datetime
) -> tuple[list[Finding], Policy | None]:
    where: Where = {"name": host, "address": seen.address}
    if seen.not_public:
        return [
            finding(
                "ADDRESS_NOT_PUBLIC",
                f"{host} has the non-public address {seen.address}; not contacted",
                **where,
            )
        ], None
    if seen.connect_error is not None:
        return [finding("POLICY_CONNECT_FAILED", seen.connect_error, **where)], None
    out = _tls(host, seen, options, now)
    if seen.status is None:
        if not out:
            out.append(finding("POLICY_FETCH_FAILED", seen.fetch_error or "no answer", **where))
        return out, None
    http, acceptable = _http(host, seen)
    out += http
    if seen.body is None or seen.oversize or seen.status != 200:
        return out, None
    body_findings, policy = _body(seen.body, where)
    out += body_findings
    return out, policy if acceptable else None


def _tls(host: str, seen: PolicyAddressSeen, options: Options, now: datetime) -> list[Finding]:
    where: Where = {"name": host, "address": seen.address}
    if seen.tls_error is not None:
        return [finding("POLICY_TLS_FAILED", seen.tls_error, **where)]
    if seen.cert is None:
        return []
    return cert_findings(seen.cert, host, where, now, policy_thresholds(options), "POLICY")


def policy_thresholds(options: Options) -> tuple[int, int, Severity]:
    return options.policy_cert_warning_days, options.policy_cert_critical_days, Severity.CRITICAL


def cert_findings(
    cert: CertSeen,
    host: str,
    where: Where,
    now: datetime,
    thresholds: tuple[int, int, Severity],
    prefix: str,
) -> list[Finding]:
    """Chain, name and expiry of one certificate (shared by the policy host and MX rules)."""
    left = days_left(cert.not_after, now)
    expiry: Where = {"not_after": cert.not_after.isoformat(), "days_left": left}
    names = ", ".join(cert.names) or "(no DNS names)"
    out = []
    if cert.verify_error is ResultType.CERTIFICATE_EXPIRED or left < 0:
        message = f"certificate expired {cert.not_after:%Y-%m-%d}"
        out.append(finding(f"{prefix}_CERT_EXPIRED", message, **where, **expiry))
    elif cert.verify_error is not None:
        out.append(
            finding(
                f"{prefix}_CERT_UNTRUSTED",
                f"certificate not trusted: {cert.verify_reason or cert.verify_error}",
                **where,
            )
        )
    if not matches_host(cert.names, host):
        out.append(
            finding(
                f"{prefix}_CERT_NAME_MISMATCH",
                f"certificate names [{names}] do not cover {host}",
                **where,
                seen=names,
            )
        )
    warning_days, critical_days, critical = thresholds
    if 0 <= left <= warning_days:
        severity = critical if left <= critical_days else Severity.WARNING
        out.append(
            finding(
                f"{prefix}_CERT_EXPIRES",
                f"certificate of {host} expires in {left} days",
                severity=severity,
                **where,
                **expiry,
            )
        )
    return out


def _http(host: str, seen: PolicyAddressSeen) -> tuple[list[Finding], bool]:
    """Status, redirect, type and size, judged by the sender's own rules; ok-for-a-sender flag."""
    assert seen.status is not None
    where: Where = {"name": host, "address": seen.address}
    url = f"https://{host}/.well-known/mta-sts.txt"
    out = []
    location = seen.headers.get("location")
    if problem := redirect_problem(url, seen.status, location):
        out.append(finding("POLICY_REDIRECT", problem, **where, location=location or "(none)"))
    elif problem := status_problem(url, seen.status):
        out.append(finding("POLICY_HTTP_STATUS", problem, **where, status=seen.status))
    if seen.status == 200 and (problem := content_type_problem(url, seen.headers)):
        out.append(
            finding(
                "POLICY_CONTENT_TYPE",
                problem,
                **where,
                seen=seen.headers.get("content-type", "(none)"),
            )
        )
    if seen.oversize:
        out.append(finding("POLICY_TOO_LARGE", f"{url}: more than {MAX_BODY} bytes", **where))
    return out, not out


def _body(body: bytes, where: Where) -> tuple[list[Finding], Policy | None]:
    try:
        policy = parse_policy(body)
    except PolicySyntaxError as exc:
        line = exc.line or None
        return [finding("POLICY_SYNTAX", str(exc), **where, line=line)], None
    notes = [
        finding(_LINT_CODES[n.kind], n.detail, **where, line=n.line or None)
        for n in lint_policy(body)
    ]
    return notes, policy


def _consistency(seen: PolicyHostSeen) -> list[Finding]:
    bodies = {a.address: a.body for a in seen.addresses if a.body is not None and a.status == 200}
    if len(set(bodies.values())) < 2:
        return []
    digests = {a: hashlib.sha256(b).hexdigest()[:12] for a, b in bodies.items()}
    shown = ", ".join(f"{a}={d}" for a, d in digests.items())
    return [
        finding(
            "POLICY_ADDRESSES_DIFFER",
            f"{seen.host} serves different bytes per address (SHA-256 prefixes: {shown})",
            name=seen.host,
            seen=shown,
        )
    ]


def judge_policy(served: list[Served], record: TxtRecord | None, host: str) -> list[Finding]:
    """Mode, max_age and the id of the policy senders get (the first acceptable address)."""
    if not served:
        return []
    policy = served[0].policy
    out = []
    if policy.mode is Mode.TESTING:
        out.append(
            finding(
                "POLICY_MODE_TESTING",
                "mode testing: failures are reported, mail is not deferred",
                name=host,
            )
        )
    elif policy.mode is Mode.NONE:
        out.append(finding("POLICY_MODE_NONE", "mode none: senders drop the policy", name=host))
    if policy.mode is Mode.ENFORCE and policy.max_age < ONE_DAY:
        out.append(
            finding(
                "POLICY_MAX_AGE_SHORT",
                f"max_age {policy.max_age} s in enforce mode",
                name=host,
                seen=policy.max_age,
            )
        )
    if record is not None:
        out += _id(served, record, host)
    return out


def _id(served: list[Served], record: TxtRecord, host: str) -> list[Finding]:
    verdicts = {s.address: judge_id(record.id, s.policy) for s in served}
    stale = [a for a, v in verdicts.items() if v is IdVerdict.NOT_BUMPED]
    if stale:
        return [
            finding(
                "ID_NOT_BUMPED",
                f"id {record.id} was derived from other content than "
                f"the policy served at {', '.join(stale)}",
                name=host,
                seen=record.id,
                address=", ".join(stale),
            )
        ]
    if IdVerdict.NOT_VERIFIABLE in verdicts.values():
        return [
            finding(
                "ID_NOT_VERIFIABLE",
                f"id {record.id} is not derived from the policy content (`generate` ids are)",
                name=host,
                seen=record.id,
            )
        ]
    return []
