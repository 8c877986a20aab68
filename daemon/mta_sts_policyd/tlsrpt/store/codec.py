"""Canonical text keys for the store: policies and failure details as sorted-key JSON.

Pure. Canonical keys (not the producer's JSON text, as sys4 uses) make identical policies from
differently ordering producers one aggregate (docs/conformance.md: RPT-aggregate-key).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.tlsrpt.model import (
    DomainDay,
    FailureDetail,
    PolicyAggregate,
    PolicyRef,
    PolicyType,
    SessionEvent,
)
from mta_sts_policyd.tlsrpt.normalize import normalize_detail, report_name

_DETAIL_FIELDS = (
    ("s", "sending_mta_ip"),
    ("n", "receiving_mx_hostname"),
    ("h", "receiving_mx_helo"),
    ("r", "receiving_ip"),
    ("a", "additional_information"),
    ("f", "failure_reason_code"),
)


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# The same few policies, domains and failure details recur in every batch (10k datagrams/s at
# the collector): encoding each once instead of per event is ~20 % of the ingest CPU.
@lru_cache(maxsize=4096)
def domain_key(domain: str) -> str:
    return report_name(domain)


@lru_cache(maxsize=4096)
def policy_json(policy: PolicyRef, report_domain: str) -> str:
    """No-policy-found without a domain gets the report domain (docs/conformance.md:
    RPT-4.4-policy-domain-always)."""
    return _dumps(
        {
            "t": str(policy.policy_type),
            "d": report_name(policy.policy_domain or report_domain),
            "s": list(policy.policy_strings),
            "m": [report_name(m) for m in policy.mx_hosts],
        }
    )


def agg_key(event: SessionEvent) -> tuple[str, str, str, str]:
    day = datetime.fromtimestamp(event.timestamp, UTC).date().isoformat()
    domain = domain_key(event.report_domain)
    return day, domain, event.tlsrpt_record or "", policy_json(event.policy, domain)


@lru_cache(maxsize=16384)
def detail_json(detail: FailureDetail) -> str:
    d = normalize_detail(detail)
    out: dict[str, str] = {"c": str(d.result_type)}
    for short, attr in _DETAIL_FIELDS:
        value = getattr(d, attr)
        if value is not None:
            out[short] = value
    return _dumps(out)


def decode_policy(text: str) -> PolicyRef:
    raw: dict[str, Any] = json.loads(text)
    return PolicyRef(
        policy_type=PolicyType(raw["t"]),
        policy_domain=str(raw["d"]),
        policy_strings=tuple(str(s) for s in raw.get("s", ())),
        mx_hosts=tuple(str(m) for m in raw.get("m", ())),
    )


def decode_detail(text: str) -> FailureDetail:
    raw: dict[str, str] = json.loads(text)
    try:
        result = ResultType(raw["c"])
    # never emit a detail without a valid result-type (docs/conformance.md: RPT-4.3-result-types)
    except ValueError:
        result = ResultType.VALIDATION_FAILURE
    kwargs = {attr: raw.get(short) for short, attr in _DETAIL_FIELDS}
    return FailureDetail(result_type=result, **kwargs)


def group_domain_days(
    day: date,
    aggs: list[tuple[int, str, str, str, int, int]],
    details: dict[int, list[tuple[str, int]]],
) -> list[DomainDay]:
    """Rows (ordered by domain, record) -> one DomainDay per (domain, record)."""
    groups: dict[tuple[str, str], list[PolicyAggregate]] = {}
    for agg_id, domain, record, policy, successes, failures in aggs:
        agg = PolicyAggregate(
            policy=decode_policy(policy),
            successes=successes,
            failures=failures,
            details=tuple((decode_detail(t), c) for t, c in details.get(agg_id, ())),
        )
        groups.setdefault((domain, record), []).append(agg)
    return [
        DomainDay(day, domain, record or None, tuple(aggs_))
        for (domain, record), aggs_ in groups.items()
    ]
