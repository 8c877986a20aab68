"""The finding model: catalogue, documentation, status precedence, ordering and JSON form."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.tools.check.findings import (
    CATALOGUE,
    NagiosStatus,
    Severity,
    finding,
    sort_findings,
    status_of,
    worst_status,
)
from support import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "check-findings.md").read_text()


def test_every_code_is_documented_with_its_fix() -> None:
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", DOC, re.MULTILINE))
    assert set(rows) == set(CATALOGUE)
    for code, info in CATALOGUE.items():
        assert info.fix in DOC, code
        assert str(info.severity) in rows[code] or "critical in enforce" in rows[code], code


def test_codes_are_stable_identifiers() -> None:
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]+", code) for code in CATALOGUE)
    assert all(info.fix.endswith(".") for info in CATALOGUE.values())


def test_unknown_code_is_a_bug() -> None:
    with pytest.raises(KeyError):
        finding("NO_SUCH_CODE", "x")


def test_json_form() -> None:
    f = finding("MX_NOT_COVERED", "m", severity=Severity.WARNING, mx="a.example", line=None)
    assert f.to_json() == {
        "code": "MX_NOT_COVERED",
        "severity": "warning",
        "message": "m",
        "evidence": {"mx": "a.example"},
        "fix": CATALOGUE["MX_NOT_COVERED"].fix,
    }


def test_key_ignores_changing_values() -> None:
    a = finding("MX_CERT_EXPIRES", "in 5 days", mx="m.example", address="192.0.2.1", days_left=5)
    b = finding("MX_CERT_EXPIRES", "in 4 days", mx="m.example", address="192.0.2.1", days_left=4)
    c = finding("MX_CERT_EXPIRES", "in 4 days", mx="n.example", address="192.0.2.1", days_left=4)
    assert a.key == b.key != c.key


severities = st.lists(st.sampled_from(list(Severity)), max_size=8)


@given(severities)
def test_status_precedence(levels: list[Severity]) -> None:
    found = [finding("TXT_MISSING", "x", severity=s) for s in levels]
    status = status_of(found)
    if Severity.CRITICAL in levels:
        assert status is NagiosStatus.CRITICAL
    elif Severity.UNKNOWN in levels:
        assert status is NagiosStatus.UNKNOWN
    elif Severity.WARNING in levels:
        assert status is NagiosStatus.WARNING
    else:
        assert status is NagiosStatus.OK
    ordered = sort_findings(found)
    assert status_of(ordered[:1]) is status or not ordered


@given(st.lists(st.sampled_from(list(NagiosStatus)), max_size=6))
def test_worst_status_matches_status_of(statuses: list[NagiosStatus]) -> None:
    as_severity = {
        NagiosStatus.CRITICAL: Severity.CRITICAL,
        NagiosStatus.UNKNOWN: Severity.UNKNOWN,
        NagiosStatus.WARNING: Severity.WARNING,
        NagiosStatus.OK: Severity.INFO,
    }
    found = [finding("TXT_MISSING", "x", severity=as_severity[s]) for s in statuses]
    assert worst_status(statuses) is status_of(found)
