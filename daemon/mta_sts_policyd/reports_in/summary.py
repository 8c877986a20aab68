"""Per day and organisation: sessions, failure rate, failures by type and MX, policy seen. Pure."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from mta_sts_policyd.reports_in.model import FailureDay, PolicyDay

SILENT_AFTER = timedelta(days=2)
"""An organisation with no report for this long after its last one has stopped reporting."""


@dataclass(slots=True)
class DayLine:
    day: date
    organization: str
    sessions: int = 0
    failures: int = 0
    policies: set[str] = field(default_factory=set)
    """`mode/hash` of each policy the organisation saw (`no-policy-found` as such)."""
    by_result: Counter[str] = field(default_factory=Counter)
    by_mx: Counter[str] = field(default_factory=Counter)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.sessions if self.sessions else 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    domain: str
    lines: tuple[DayLine, ...]
    stopped: tuple[tuple[str, date], ...]
    """(organisation, last day reported) for those silent for SILENT_AFTER before `today`."""
    not_counted_future: int = 0
    """Stored reports left out because their range starts after now (said with the lines)."""


def summarize(
    domain: str,
    policies: list[PolicyDay],
    failures: list[FailureDay],
    today: date,
    *,
    not_counted_future: int = 0,
) -> Summary:
    lines: dict[tuple[date, str], DayLine] = {}
    for p in policies:
        line = lines.setdefault((p.day, p.organization), DayLine(p.day, p.organization))
        line.sessions += p.successes + p.failures
        line.failures += p.failures
        seen = p.policy_type if p.policy_type != "sts" else f"{p.mode or '?'}/{p.policy_hash}"
        line.policies.add(seen)
    for f in failures:
        line = lines.setdefault((f.day, f.organization), DayLine(f.day, f.organization))
        line.by_result[f.result_type] += f.count
        line.by_mx[f.receiving_mx or "(unnamed)"] += f.count
    last: dict[str, date] = defaultdict(lambda: date.min)
    for day, org in lines:
        last[org] = max(last[org], day)
    stopped = tuple(sorted((org, day) for org, day in last.items() if today - day > SILENT_AFTER))
    return Summary(domain, tuple(lines[k] for k in sorted(lines)), stopped, not_counted_future)


def by_count(counts: Counter[str]) -> str:
    """`mx2.example.com 7, mx1.example.com 2`: the most failures first, then by name, so the
    host or result type to look at leads (failures by MX and by result type, in the text and
    the HTML page alike)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count}" for name, count in ranked)


def not_counted_note(count: int) -> str:
    """What the outputs say of `not_counted_future` (summary, readiness, the HTML page)."""
    return f"{count} stored report(s) dated in the future not counted"


def daily_totals(summary: Summary) -> list[tuple[date, int, int]]:
    """(day, sessions, failures) over all organisations, by day (the chart's series)."""
    totals: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for line in summary.lines:
        totals[line.day][0] += line.sessions
        totals[line.day][1] += line.failures
    return [(day, s, f) for day, (s, f) in sorted(totals.items())]
