"""Is `enforce` safe for a domain? The verdict from the TLS reports it received. Pure.

The rule every rollout guide gives, made exact: enough days of reports about the policy now
served (default 14), from enough organisations (default 2), and no failure that `enforce`
would turn into deferred mail (RFC 8461 §5: STARTTLS missing, certificate problems, policy
fetch problems) on an MX host the policy covers. Anything short of that is listed as a reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from mta_sts_policyd.reports_in.model import (
    FAILURE_RESULTS_BLOCKING_ENFORCE,
    FailureDay,
    PolicyDay,
    policy_hash,
)
from mta_sts_policyd.sts.match import mx_matches

DEFAULT_MIN_DAYS = 14
DEFAULT_MIN_ORGANIZATIONS = 2


@dataclass(frozen=True, slots=True)
class ServedPolicy:
    """The policy the operator serves now: its hash (as reports identify it), mode, patterns."""

    policy_hash: str
    mode: str | None
    mx_patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    domain: str
    ready: bool
    reasons: tuple[str, ...]
    days_reported: int
    organizations: tuple[str, ...]
    sessions: int
    failures: int
    blocking: tuple[str, ...] = field(default=())
    not_counted_future: int = 0
    """Stored reports left out because their range starts after now (said with the counts)."""


def served_from_text(lines: list[str] | tuple[str, ...]) -> ServedPolicy:
    """A ServedPolicy from policy lines (a policy file, or a policy-string as reported)."""
    clean = tuple(line.strip() for line in lines if line.strip())
    mode = next(
        (
            v.strip().lower()
            for k, _, v in (x.partition(":") for x in clean)
            if k.strip().lower() == "mode"
        ),
        None,
    )
    patterns = tuple(
        v.strip().lower()
        for k, _, v in (x.partition(":") for x in clean)
        if k.strip().lower() == "mx"
    )
    return ServedPolicy(policy_hash(clean), mode, patterns)


def readiness(
    domain: str,
    served: ServedPolicy,
    policy_days: list[PolicyDay],
    failure_days: list[FailureDay],
    *,
    min_days: int = DEFAULT_MIN_DAYS,
    min_organizations: int = DEFAULT_MIN_ORGANIZATIONS,
    not_counted_future: int = 0,
) -> Verdict:
    mine = [p for p in policy_days if p.policy_hash == served.policy_hash]
    days = sorted({p.day for p in mine})
    orgs = tuple(sorted({p.organization for p in mine}))
    reasons: list[str] = []
    if served.mode == "enforce":
        reasons.append("the served policy is already in enforce mode")
    if len(days) < min_days:
        reasons.append(f"{len(days)} day(s) of reports about the served policy, {min_days} needed")
    if len(orgs) < min_organizations:
        reasons.append(
            f"reports from {len(orgs)} organisation(s) ({', '.join(orgs) or 'none'}),"
            f" {min_organizations} needed"
        )
    first = days[0] if days else date.max
    blocking = _blocking(served, [f for f in failure_days if f.day >= first])
    reasons.extend(blocking)
    return Verdict(
        domain=domain,
        ready=not reasons,
        reasons=tuple(reasons),
        days_reported=len(days),
        organizations=orgs,
        sessions=sum(p.successes + p.failures for p in mine),
        failures=sum(p.failures for p in mine),
        blocking=tuple(blocking),
        not_counted_future=not_counted_future,
    )


def _covered(served: ServedPolicy, mx: str | None) -> bool:
    """Unknown MX counts (it may be one of ours); otherwise the policy's patterns decide."""
    return mx is None or any(mx_matches(p, mx) for p in served.mx_patterns)


def _blocking(served: ServedPolicy, failures: list[FailureDay]) -> list[str]:
    """ "<org> saw <result> on <mx> on <n> day(s)", one line per org, result type and MX."""
    seen: dict[tuple[str, str, str], set[date]] = defaultdict(set)
    for f in failures:
        if f.result_type in FAILURE_RESULTS_BLOCKING_ENFORCE and _covered(served, f.receiving_mx):
            seen[(f.organization, f.result_type, f.receiving_mx or "an unnamed MX")].add(f.day)
    return [
        f"{org} saw {result} on {mx} on {len(days)} day(s) (last {max(days).isoformat()})"
        for (org, result, mx), days in sorted(seen.items())
    ]
