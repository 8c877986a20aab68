"""Monitor state and transitions (pure): what was found last time, and what changed.

A finding is the same finding across runs when its code and its "where" evidence (name,
address, MX, pattern, URI, line) match (`Finding.key`); a changed message or days-left value
alone is not a transition, a changed severity is. The clock is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mta_sts_policyd.tools.check.findings import Finding, NagiosStatus, Severity
from mta_sts_policyd.tools.check.judge import DomainReport

STATE_VERSION = 1

ALERT_CHANNELS = ("mail", "command")
"""The ways an alert goes out; each keeps the transitions it could not deliver itself."""


class Change(StrEnum):
    NEW = "new"
    RESOLVED = "resolved"
    CHANGED = "changed"


@dataclass(frozen=True)
class Remembered:
    code: str
    severity: Severity
    message: str
    evidence: tuple[tuple[str, str], ...]
    since: float


@dataclass(frozen=True)
class Transition:
    domain: str
    change: Change
    code: str
    severity: Severity
    """The new severity (for `resolved`: the severity it had)."""
    previous: Severity | None
    message: str
    evidence: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "change": str(self.change),
            "code": self.code,
            "severity": str(self.severity),
            "message": self.message,
            "previous_severity": str(self.previous) if self.previous else None,
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transition:
        previous = data["previous_severity"]
        return cls(
            str(data["domain"]),
            Change(data["change"]),
            str(data["code"]),
            Severity(data["severity"]),
            None if previous is None else Severity(previous),
            str(data["message"]),
            tuple((str(a), str(b)) for a, b in data["evidence"].items()),
        )

    def line(self) -> str:
        was = f" (was {self.previous})" if self.change is Change.CHANGED else ""
        return f"{self.domain}: {self.change} {self.severity} {self.code}{was}: {self.message}"


@dataclass
class DomainState:
    findings: dict[str, Remembered] = field(default_factory=dict)
    status: NagiosStatus = NagiosStatus.OK
    last_check: float | None = None
    last_success: float | None = None
    """The last run where nothing was left unchecked (no `unknown` finding)."""
    policy_id: str | None = None
    policy_since: float | None = None
    """When the current TXT id was first seen: the policy's age is measured from it."""
    certificates: dict[str, int] = field(default_factory=dict)
    """"kind host" -> days left (smallest over the host's addresses)."""


def _key(f: Finding) -> str:
    code, where = f.key
    return f"{code}|{where}"


def advance(
    state: DomainState | None, report: DomainReport, now: float
) -> tuple[DomainState, list[Transition]]:
    """The state after `report`, and the transitions from `state` to it."""
    old = state or DomainState()
    current = {_key(f): f for f in report.findings}
    transitions = []
    remembered: dict[str, Remembered] = {}
    for key, f in current.items():
        before = old.findings.get(key)
        if before is None:
            transitions.append(_transition(report.domain, Change.NEW, f, None))
        elif before.severity is not f.severity:
            transitions.append(_transition(report.domain, Change.CHANGED, f, before.severity))
        since = before.since if before is not None and before.severity is f.severity else now
        remembered[key] = Remembered(f.code, f.severity, f.message, f.evidence, since)
    for key, gone in old.findings.items():
        if key not in current:
            transitions.append(
                Transition(
                    report.domain,
                    Change.RESOLVED,
                    gone.code,
                    gone.severity,
                    None,
                    gone.message,
                    gone.evidence,
                )
            )
    unchecked = any(f.severity is Severity.UNKNOWN for f in report.findings)
    same_id = old.policy_id == report.policy_id and old.policy_since is not None
    new = DomainState(
        findings=remembered,
        status=report.status,
        last_check=now,
        last_success=old.last_success if unchecked else now,
        policy_id=report.policy_id,
        policy_since=old.policy_since if same_id else (now if report.policy_id else None),
        certificates={f"{kind} {host}": days for kind, host, days in report.certificates},
    )
    return new, transitions


def _transition(domain: str, change: Change, f: Finding, previous: Severity | None) -> Transition:
    return Transition(domain, change, f.code, f.severity, previous, f.message, f.evidence)


# --- the state file's JSON form ---------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    """What the state file keeps: each domain's last findings, and per alert channel the
    transitions it could not deliver yet (sent again with the next pass's, so that none is
    lost, and only through that channel, so that the one that worked does not repeat them)."""

    domains: dict[str, DomainState] = field(default_factory=dict)
    unsent: Mapping[str, tuple[Transition, ...]] = field(default_factory=dict)


UNSENT_KEPT = 500
"""At most this many undelivered transitions are kept per channel (the newest): a relay that
is down for weeks must not grow the file without bound."""


def state_to_json(saved: Saved) -> dict[str, Any]:
    """The file's JSON. The kept transitions go under `unsent_by_channel`: a version that
    knew one `unsent` list for every channel still reads this file (without them)."""
    return {
        "version": STATE_VERSION,
        "domains": {d: _domain_json(s) for d, s in saved.domains.items()},
        "unsent_by_channel": {
            channel: [t.to_json() for t in kept[-UNSENT_KEPT:]]
            for channel, kept in saved.unsent.items()
            if kept
        },
    }


def _domain_json(s: DomainState) -> dict[str, Any]:
    return {
        "findings": {
            k: {
                "code": r.code,
                "severity": str(r.severity),
                "message": r.message,
                "evidence": dict(r.evidence),
                "since": r.since,
            }
            for k, r in s.findings.items()
        },
        "status": s.status.name,
        "last_check": s.last_check,
        "last_success": s.last_success,
        "policy_id": s.policy_id,
        "policy_since": s.policy_since,
        "certificates": dict(s.certificates),
    }


def state_from_json(data: Any) -> Saved:
    """Parse a state file; ValueError naming what is wrong (the caller keeps the file). A file
    written before undelivered alerts were kept has no `unsent`; one written before they were
    kept per channel has a single `unsent` list, owed to every channel (which one failed was
    not recorded, so each is tried again, as that version did)."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"not a version {STATE_VERSION} monitor state")
    try:
        domains = {d: _domain_from_json(s) for d, s in data["domains"].items()}
        lists = data.get("unsent_by_channel")
        if lists is None:  # one list for every channel, or none at all
            lists = dict.fromkeys(ALERT_CHANNELS, data.get("unsent") or [])
        unsent = {
            str(channel): tuple(Transition.from_json(t) for t in kept)
            for channel, kept in dict(lists).items()
            if kept
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed monitor state: {exc!r}") from None
    return Saved(domains, unsent)


def _domain_from_json(s: dict[str, Any]) -> DomainState:
    findings = {
        k: Remembered(
            r["code"],
            Severity(r["severity"]),
            str(r["message"]),
            tuple((str(a), str(b)) for a, b in r["evidence"].items()),
            float(r["since"]),
        )
        for k, r in s["findings"].items()
    }
    return DomainState(
        findings=findings,
        status=NagiosStatus[s["status"]],
        last_check=s["last_check"],
        last_success=s["last_success"],
        policy_id=s["policy_id"],
        policy_since=s["policy_since"],
        certificates={str(k): int(v) for k, v in s["certificates"].items()},
    )
