"""Take received reports in: parse, keep only the operator's own domains, store, quarantine.

Three doors, one rule set: a mail message (Postfix `pipe` or an alias on stdin, or a Maildir
file) and an HTTPS body. A report already stored counts once (store key: organisation +
report-id). What cannot be used is rejected with its reason and kept in a bounded quarantine
directory; a store failure is the only "try again later" (StoreError, the pipe's exit 75).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from mta_sts_policyd.errors import ReportRejected
from mta_sts_policyd.reports_in.model import ReceivedReport
from mta_sts_policyd.reports_in.parse import parse_report
from mta_sts_policyd.reports_in.store import ReportsInStore
from mta_sts_policyd.reports_in.unpack import (
    MAX_INFLATED,
    documents_from_body,
    documents_from_message,
    message_id,
)

log = logging.getLogger(__name__)

QUARANTINE_KEEP = 200
"""Rejected inputs kept for inspection; the oldest go first."""


@dataclass
class Outcome:
    """What one input gave: reports stored, already known, rejected (with reasons)."""

    stored: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """At least one report taken (stored now or before), so the input was a report."""
        return self.stored + self.duplicates > 0


class BodyIntake(Protocol):
    """What the HTTPS endpoint hands a POSTed body to: the store's Intake, or the host's spool
    (reports_in/spool.py) when the host cannot write the store itself."""

    def take_body(self, body: bytes, content_type: str, source: str) -> Outcome: ...

    def refuse(self, raw: bytes, reason: str, source: str) -> Outcome: ...

    def prune(self) -> int: ...


class Quarantine:
    """A directory of rejected inputs, each beside a `.reason` file; at most `keep` of them."""

    def __init__(self, directory: Path, keep: int = QUARANTINE_KEEP) -> None:
        self.directory = directory
        self.keep = keep

    def put(self, raw: bytes, reason: str, now: float) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        digest = hashlib.sha256(raw).hexdigest()[:12]
        path = self.directory / f"{int(now)}-{digest}.bin"
        path.write_bytes(raw)
        path.with_suffix(".reason").write_text(reason + "\n")
        os.chmod(path, 0o600)
        self._trim()
        return path

    def _trim(self) -> None:
        kept = sorted(self.directory.glob("*.bin"), key=lambda p: (p.stat().st_mtime, p.name))
        for old in kept[: max(0, len(kept) - self.keep)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".reason").unlink(missing_ok=True)


class Intake:
    def __init__(
        self,
        store: ReportsInStore,
        own_domains: frozenset[str],
        quarantine: Quarantine,
        clock: Callable[[], float],
        retention_days: int = 400,
        max_inflated: int = MAX_INFLATED,
    ) -> None:
        self.store = store
        self.own_domains = own_domains
        self.quarantine = quarantine
        self.clock = clock
        self.retention_days = retention_days
        self.max_inflated = max_inflated

    def prune(self) -> int:
        """Forget reports older than the retention (run with every intake: one DELETE)."""
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        return self.store.prune(today - timedelta(days=self.retention_days))

    def take_message(self, raw: bytes, source: str) -> Outcome:
        """One mail message, or a saved report file (gzip or JSON); every report in it counts."""
        try:
            documents = documents_from_message(raw, self.max_inflated)
        except ReportRejected as exc:
            mid = message_id(raw)
            where = "" if mid == "-" else f"message {mid}: "
            return self._reject(raw, f"{where}{exc.reason}", source)
        return self._take(raw, documents, source)

    def take_body(self, body: bytes, content_type: str, source: str) -> Outcome:
        """One HTTPS POST body (RFC 8460 §5.4)."""
        try:
            documents = documents_from_body(body, content_type, self.max_inflated)
        except ReportRejected as exc:
            return self._reject(body, exc.reason, source)
        return self._take(body, documents, source)

    def refuse(self, raw: bytes, reason: str, source: str) -> Outcome:
        """An input refused before parsing (an HTTPS body too large or of the wrong type)."""
        return self._reject(raw, reason, source)

    def _take(self, raw: bytes, documents: list[bytes], source: str) -> Outcome:
        outcome = Outcome()
        for document in documents:
            try:
                report = parse_report(document)
            except ReportRejected as exc:
                outcome.rejected += self._reject(raw, exc.reason, source).rejected
                continue
            late = self._out_of_range(report)
            if late:
                outcome.rejected += self._reject(raw, late, source).rejected
                continue
            mine = tuple(p for p in report.policies if p.policy_domain in self.own_domains)
            if not mine:
                others = ",".join(sorted(report.domains))
                reason = f"report {report.report_id} is about {others}, not an own domain"
                outcome.rejected += self._reject(raw, reason, source).rejected
                continue
            if self.store.add(replace(report, policies=mine), source, self.clock()):
                outcome.stored += 1
                event = "report-stored"
            else:
                outcome.duplicates += 1
                event = "report-duplicate"
            log.info(
                "event=%s org=%r report_id=%r day=%s domains=%s source=%s",
                event,
                report.organization,
                report.report_id,
                report.day.isoformat(),
                ",".join(sorted(p.policy_domain for p in mine)),
                source,
            )
        return outcome

    def _out_of_range(self, report: ReceivedReport) -> str:
        """Why a report's dates cannot count ('' when they can): a range that ends more than a
        day from now (no sender reports a day that has not ended; a day allows for clocks and
        zones) would count towards `readiness` days that have not happened; a day older than
        the retention would be stored and pruned at once, reported as stored every time."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        if report.end > now + timedelta(days=1):
            return f"report {report.report_id} ends {report.end.isoformat()}, in the future"
        oldest = now.date() - timedelta(days=self.retention_days)
        if report.day < oldest:
            return (
                f"report {report.report_id} is about {report.day.isoformat()}, older than"
                f" reports_in.retention_days ({self.retention_days})"
            )
        return ""

    def _reject(self, raw: bytes, reason: str, source: str) -> Outcome:
        kept = self.quarantine.put(raw, reason, self.clock())
        log.warning("event=report-rejected source=%s reason=%r kept=%s", source, reason, kept)
        return Outcome(rejected=[reason])
