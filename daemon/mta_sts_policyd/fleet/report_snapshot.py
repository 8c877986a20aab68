"""One node's TLS-RPT counts of one UTC day as a Redis value, and the fleet-wide merge.

Pure: no I/O, no clock. Each node uploads its whole day as one hash field (snapshot:DAY, field =
node name), so a re-upload replaces that node's counts and never adds them twice; the merge
sums the counts of one snapshot per node. Keys are the store's canonical texts
(tlsrpt/store/codec.py), so equal policies and failure details from different nodes add up.

Redis is a trust boundary: a snapshot is re-validated as it is read (counts are bounded
integers, names are host names, every policy and detail is decoded and re-canonicalised); a
malformed one is rejected whole (SnapshotInvalid) and the caller leaves that node out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from mta_sts_policyd.tlsrpt.model import DomainDay, PolicyAggregate
from mta_sts_policyd.tlsrpt.normalize import hostname
from mta_sts_policyd.tlsrpt.store import codec

FORMAT = 1
MAX_COUNT = 10**12
"""More sessions than any fleet has in a day: a larger count is damage, not data."""
MAX_TEXT = 4096
"""Bound for a TLSRPT record text and for each canonical policy or detail key."""

ReportKey = tuple[str, str]
"""(report domain, TLSRPT record text; '' = not known, looked up when sending)."""


class SnapshotInvalid(ValueError):
    """A snapshot read from Redis that this daemon will not count (the reason says why)."""


@dataclass(frozen=True, slots=True)
class PolicyCounts:
    successes: int
    failures: int
    details: Mapping[str, int]
    """Canonical failure-detail text -> failed-session count."""


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """What one node counted on one day, as uploaded."""

    node: str
    day: date
    final: bool
    """Uploaded after the day ended (the node's counts of the day are complete)."""
    reports: Mapping[ReportKey, Mapping[str, PolicyCounts]]
    """(domain, record) -> canonical policy text -> counts."""

    @property
    def sessions(self) -> int:
        return sum(c.successes + c.failures for pol in self.reports.values() for c in pol.values())


def record_digest(record: str | None) -> str:
    """A short stable name for a TLSRPT record text (Redis keys and fields stay short)."""
    return hashlib.sha256((record or "").encode()).hexdigest()[:16]


def state_field(domain: str, record: str | None) -> str:
    """The report_state hash field of one (domain, record) report."""
    return f"{domain} {record_digest(record)}"


def encode_snapshot(node: str, day: date, *, final: bool, domain_days: Iterable[DomainDay]) -> str:
    """The JSON of one node's day (canonical: sorted keys), from the local store's DomainDays."""
    reports: dict[ReportKey, dict[str, dict[str, Any]]] = {}
    for dd in domain_days:
        domain = codec.domain_key(dd.report_domain)
        slot = reports.setdefault((domain, dd.tlsrpt_record or ""), {})
        for agg in dd.policies:
            entry = slot.setdefault(
                codec.policy_json(agg.policy, domain), {"s": 0, "f": 0, "x": {}}
            )
            entry["s"] += agg.successes
            entry["f"] += agg.failures
            for detail, count in agg.details:
                key = codec.detail_json(detail)
                entry["x"][key] = entry["x"].get(key, 0) + count
    body = {
        "v": FORMAT,
        "node": node,
        "day": day.isoformat(),
        "final": final,
        "reports": [
            {"d": d, "r": r, "p": [{"k": k, **v} for k, v in sorted(pols.items())]}
            for (d, r), pols in sorted(reports.items())
        ],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_snapshot(raw: str | bytes, *, node: str, day: date) -> NodeSnapshot:
    """Parse and validate one hash field read from Redis; raises SnapshotInvalid."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotInvalid(f"not JSON: {exc}") from None
    final = snapshot_final(body, node=node, day=day)
    reports: dict[ReportKey, dict[str, PolicyCounts]] = {}
    for item in _list(body.get("reports"), "reports"):
        domain, record, policies = _report(item)
        slot = reports.setdefault((domain, record), {})
        for key, counts in policies:
            slot[key] = _added(slot.get(key), counts)
    return NodeSnapshot(node, day, final, reports)


def snapshot_final(body: object, *, node: str, day: date) -> bool:
    """The envelope of a parsed snapshot (format, node, day) checked; is it final?"""
    if not isinstance(body, dict) or body.get("v") != FORMAT:
        raise SnapshotInvalid("not a snapshot of a known format")
    if body.get("node") != node or body.get("day") != day.isoformat():
        raise SnapshotInvalid("node or day does not match the key it was stored under")
    final = body.get("final")
    if not isinstance(final, bool):
        raise SnapshotInvalid("final missing or not a boolean")
    return final


def merge(snapshots: Mapping[str, NodeSnapshot]) -> list[DomainDay]:
    """All nodes' counts of one day, summed per (domain, record, policy, detail); one
    DomainDay per (domain, record), sorted, so equal inputs give equal reports."""
    total: dict[ReportKey, dict[str, PolicyCounts]] = {}
    day: date | None = None
    for name in sorted(snapshots):
        snap = snapshots[name]
        day = snap.day
        for rkey, policies in snap.reports.items():
            slot = total.setdefault(rkey, {})
            for pkey, counts in policies.items():
                slot[pkey] = _added(slot.get(pkey), counts)
    if day is None:
        return []
    return [_domain_day(day, rkey, total[rkey]) for rkey in sorted(total)]


def _domain_day(day: date, rkey: ReportKey, policies: Mapping[str, PolicyCounts]) -> DomainDay:
    domain, record = rkey
    aggs = tuple(
        PolicyAggregate(
            codec.decode_policy(pkey),
            c.successes,
            c.failures,
            tuple((codec.decode_detail(d), n) for d, n in sorted(c.details.items())),
        )
        for pkey, c in sorted(policies.items())
    )
    return DomainDay(day, domain, record or None, aggs)


def _added(a: PolicyCounts | None, b: PolicyCounts) -> PolicyCounts:
    if a is None:
        return b
    details = dict(a.details)
    for key, count in b.details.items():
        details[key] = details.get(key, 0) + count
    return PolicyCounts(a.successes + b.successes, a.failures + b.failures, details)


def _report(item: object) -> tuple[str, str, list[tuple[str, PolicyCounts]]]:
    if not isinstance(item, dict):
        raise SnapshotInvalid("a report entry is not an object")
    domain, record = item.get("d"), item.get("r")
    if not isinstance(domain, str) or hostname(domain) != domain:
        raise SnapshotInvalid(f"report domain {domain!r} is not an A-label host name")
    if not isinstance(record, str) or not _text(record):
        raise SnapshotInvalid("TLSRPT record text missing, too long or not printable")
    return domain, record, [_policy(p, domain) for p in _list(item.get("p"), "policies")]


def _policy(item: object, domain: str) -> tuple[str, PolicyCounts]:
    if not isinstance(item, dict):
        raise SnapshotInvalid("a policy entry is not an object")
    key, details = item.get("k"), item.get("x")
    if not isinstance(key, str) or len(key) > MAX_TEXT or not isinstance(details, dict):
        raise SnapshotInvalid("policy key or details malformed")
    try:  # decoded and re-encoded: only canonical, normalised keys are ever counted
        canonical = codec.policy_json(codec.decode_policy(key), domain)
        counted: dict[str, int] = {}
        for text, count in details.items():
            dkey = codec.detail_json(codec.decode_detail(_bounded_key(text)))
            counted[dkey] = counted.get(dkey, 0) + _count(count)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotInvalid(f"policy or detail does not decode: {exc!r}") from None
    return canonical, PolicyCounts(_count(item.get("s")), _count(item.get("f")), counted)


def _bounded_key(text: str) -> str:
    if len(text) > MAX_TEXT:
        raise SnapshotInvalid("detail key too long")
    return text


def _count(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise SnapshotInvalid(f"count {value!r} is not an integer in 0..{MAX_COUNT}")
    return value


def _text(value: str) -> bool:
    return len(value) <= MAX_TEXT and all(ch.isprintable() for ch in value)


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise SnapshotInvalid(f"{what} is not a list")
    return value
