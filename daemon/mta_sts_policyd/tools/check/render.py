"""`check` output: text grouped by domain (colour only on a terminal) and the JSON document
whose schema docs/check-findings.md documents (`schema_version` 1)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from mta_sts_policyd.tools.check.findings import NagiosStatus, Severity, worst_status
from mta_sts_policyd.tools.check.judge import DomainReport

SCHEMA_VERSION = 1
_COLOURS = {
    "CRITICAL": "\033[31m", "critical": "\033[31m", "UNKNOWN": "\033[35m", "unknown": "\033[35m",
    "WARNING": "\033[33m", "warning": "\033[33m", "OK": "\033[32m", "info": "\033[36m",
}  # fmt: skip
_RESET = "\033[0m"


def as_json(reports: Sequence[DomainReport], checked_at: datetime) -> dict[str, object]:
    status = overall(reports)
    return {
        "schema_version": SCHEMA_VERSION,
        "checked_at": checked_at.isoformat().replace("+00:00", "Z"),
        "status": status.name,
        "exit_code": int(status),
        "domains": [r.to_json() for r in reports],
    }


def overall(reports: Sequence[DomainReport]) -> NagiosStatus:
    return worst_status(r.status for r in reports)


def as_text(reports: Sequence[DomainReport], *, colour: bool) -> str:
    def paint(word: str) -> str:
        return f"{_COLOURS[word]}{word}{_RESET}" if colour and word in _COLOURS else word

    blocks = []
    for report in reports:
        counts = Counter(f.severity for f in report.findings)
        summary = ", ".join(f"{counts[s]} {s}" for s in Severity if counts[s]) or "no findings"
        lines = [f"{report.domain}: {paint(report.status.name)} ({summary})"]
        for f in report.findings:
            lines.append(f"  {paint(str(f.severity))} {f.code}: {f.message}")
            where = ", ".join(f"{k}={v}" for k, v in f.evidence)
            if where:
                lines.append(f"      evidence: {where}")
            if f.severity is not Severity.INFO:
                lines.append(f"      fix: {f.fix}")
        lines.append(_sender_line(report))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _sender_line(report: DomainReport) -> str:
    sender = report.sender
    reply = sender.socketmap_reply.strip() or "(not determined)"
    types = ", ".join(sender.result_types) or "none"
    dane = "; DANE-capable senders use DANE instead" if sender.dane else ""
    return f"  a sender concludes: Postfix gets '{reply}'; TLS-RPT failures: {types}{dane}"
