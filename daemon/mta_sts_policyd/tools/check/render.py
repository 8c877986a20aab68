"""`check` output: text grouped by domain (colour only on a terminal) and the JSON document
whose schema docs/check-findings.md documents (`schema_version` 1)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from mta_sts_policyd.tools.check.addresses import MxAddressView, PolicyAddressView, TlsView
from mta_sts_policyd.tools.check.findings import NagiosStatus, Severity, worst_status
from mta_sts_policyd.tools.check.judge import DomainReport

SCHEMA_VERSION = 1
_COLOURS = {
    "CRITICAL": "\033[31m", "critical": "\033[31m", "UNKNOWN": "\033[35m", "unknown": "\033[35m",
    "WARNING": "\033[33m", "warning": "\033[33m", "OK": "\033[32m", "info": "\033[36m",
}  # fmt: skip
_RESET = "\033[0m"


def as_json(
    reports: Sequence[DomainReport], checked_at: datetime, not_checked: Sequence[str] = ()
) -> dict[str, object]:
    """The document; `not_checked` (why each name given was not checked) only when some was."""
    status = overall(reports, not_checked)
    document: dict[str, object] = {
        "schema_version": SCHEMA_VERSION,
        "checked_at": checked_at.isoformat().replace("+00:00", "Z"),
        "status": status.name,
        "exit_code": int(status),
        "domains": [r.to_json() for r in reports],
    }
    if not_checked:
        document["not_checked"] = list(not_checked)
    return document


def overall(reports: Sequence[DomainReport], not_checked: Sequence[str] = ()) -> NagiosStatus:
    """The worst domain's status; a name given that could not be checked counts as UNKNOWN
    (so CRITICAL still wins: a known failure is not hidden by a typo beside it)."""
    statuses = [r.status for r in reports] + ([NagiosStatus.UNKNOWN] if not_checked else [])
    return worst_status(statuses)


def finding_counts(report: DomainReport) -> str:
    """`1 critical, 2 warning` or `no findings`: the line after a domain's status."""
    counts = Counter(f.severity for f in report.findings)
    return ", ".join(f"{counts[s]} {s}" for s in Severity if counts[s]) or "no findings"


def as_text(reports: Sequence[DomainReport], *, colour: bool) -> str:
    def paint(word: str) -> str:
        return f"{_COLOURS[word]}{word}{_RESET}" if colour and word in _COLOURS else word

    blocks = []
    for report in reports:
        lines = [f"{report.domain}: {paint(report.status.name)} ({finding_counts(report)})"]
        for f in report.findings:
            lines.append(f"  {paint(str(f.severity))} {f.code}: {f.message}")
            where = ", ".join(f"{k}={v}" for k, v in f.evidence)
            if where:
                lines.append(f"      evidence: {where}")
            if f.severity is not Severity.INFO:
                lines.append(f"      fix: {f.fix}")
        lines += _address_lines(report)
        lines.append(_sender_line(report))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _address_lines(report: DomainReport) -> list[str]:
    """Per address of the policy host and each MX: the facts, whether or not a finding."""
    hosts = [("policy host", report.policy_host)] if report.policy_host else []
    hosts += [("MX", h) for h in report.mx_servers]
    lines = []
    for label, host in hosts:
        assert host is not None
        problem = host.error or ("" if host.addresses else "no A or AAAA record")
        lines.append(f"  {label} {host.host}:" + (f" {problem}" if problem else ""))
        for address in host.addresses:
            lines.append(f"    {address.address}: {_address_text(address)}")
    return lines


def _address_text(address: PolicyAddressView | MxAddressView) -> str:
    if not address.tried:
        return "not contacted (not a public address)"
    parts = []
    if isinstance(address, MxAddressView) and address.starttls is not None:
        parts.append("STARTTLS" if address.starttls else "no STARTTLS")
    parts += _tls_text(address.tls)
    if isinstance(address, PolicyAddressView) and address.http_status is not None:
        shown = f"{address.content_type or 'no content type'}, {address.size} bytes"
        parts.append(f"HTTP {address.http_status}, {shown}")
    if address.error:
        parts.append(f"error: {address.error}")
    return ", ".join(parts)


def _tls_text(tls: TlsView) -> list[str]:
    parts = [tls.version] if tls.version else []
    if tls.chain is not None:
        parts.append(f"chain {tls.chain}")
    if tls.names_cover_host is not None:
        names = ", ".join(tls.names) or "no DNS names"
        parts.append(f"names [{names}] {'cover' if tls.names_cover_host else 'do not cover'} it")
    if tls.days_left is not None:
        left = tls.days_left
        parts.append(f"expires in {left} days" if left >= 0 else f"expired {-left} days ago")
    return parts


def _sender_line(report: DomainReport) -> str:
    sender = report.sender
    reply = sender.socketmap_reply.strip() or "(not determined)"
    types = ", ".join(sender.result_types) or "none"
    dane = "; DANE-capable senders use DANE instead" if sender.dane else ""
    return f"  a sender concludes: Postfix gets '{reply}'; TLS-RPT failures: {types}{dane}"
