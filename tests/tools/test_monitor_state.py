"""Monitor transitions (pure, injected clock): new, resolved, changed severity; nothing else."""

from __future__ import annotations

import pytest

from mta_sts_policyd.tools.check.findings import (
    Finding,
    Severity,
    finding,
    sort_findings,
    status_of,
)
from mta_sts_policyd.tools.check.judge import DomainReport, SenderView
from mta_sts_policyd.tools.monitor.state import (
    UNSENT_KEPT,
    Change,
    DomainState,
    Saved,
    advance,
    state_from_json,
    state_to_json,
)

T0 = 1_800_000_000.0


def report(
    *findings: Finding,
    policy_id: str | None = "mspd1abc",
    certificates: tuple[tuple[str, str, int], ...] = (),
) -> DomainReport:
    ordered = tuple(sort_findings(findings))
    return DomainReport(
        "example.test",
        ordered,
        status_of(ordered),
        None,
        policy_id,
        (),
        SenderView("NOTFOUND ", (), False),
        certificates,
    )


def expiring(days: int, severity: Severity = Severity.WARNING) -> Finding:
    return finding(
        "MX_CERT_EXPIRES",
        f"expires in {days} days",
        severity=severity,
        mx="mx1.example.test",
        address="192.0.2.10",
        days_left=days,
    )


UNCOVERED = finding("MX_NOT_COVERED", "mx2 not covered", mx="mx2.example.test")


def test_first_run_reports_every_finding_as_new() -> None:
    state, changes = advance(None, report(expiring(20), UNCOVERED), T0)
    assert sorted((c.change, c.code) for c in changes) == [
        (Change.NEW, "MX_CERT_EXPIRES"),
        (Change.NEW, "MX_NOT_COVERED"),
    ]
    assert state.last_check == state.last_success == state.policy_since == T0


def test_same_findings_again_are_silent_even_if_values_move() -> None:
    state, _ = advance(None, report(expiring(20), UNCOVERED), T0)
    later, changes = advance(state, report(expiring(19), UNCOVERED), T0 + 86400)
    assert changes == []
    assert len(later.findings) == 2
    assert all(r.since == T0 for r in later.findings.values())


def test_changed_severity_and_resolution() -> None:
    state, _ = advance(None, report(expiring(8), UNCOVERED), T0)
    state, changes = advance(state, report(expiring(7, Severity.CRITICAL), UNCOVERED), T0 + 1)
    assert [(c.change, c.code, c.previous, c.severity) for c in changes] == [
        (Change.CHANGED, "MX_CERT_EXPIRES", Severity.WARNING, Severity.CRITICAL)
    ]
    assert "(was warning)" in changes[0].line()
    state, changes = advance(state, report(UNCOVERED), T0 + 2)
    assert [(c.change, c.code) for c in changes] == [(Change.RESOLVED, "MX_CERT_EXPIRES")]
    assert "MX_CERT_EXPIRES|" not in "".join(state.findings)


def test_a_finding_elsewhere_is_a_different_finding() -> None:
    state, _ = advance(None, report(UNCOVERED), T0)
    other = finding("MX_NOT_COVERED", "mx3 not covered", mx="mx3.example.test")
    _, changes = advance(state, report(other), T0 + 1)
    assert sorted(c.change for c in changes) == [Change.NEW, Change.RESOLVED]


def test_last_success_and_policy_age() -> None:
    state, _ = advance(None, report(), T0)
    unknown = finding("MX_CONNECT_FAILED", "timeout", mx="m", address="192.0.2.1")
    state, _ = advance(state, report(unknown), T0 + 10)
    assert (state.last_check, state.last_success) == (T0 + 10, T0)
    state, _ = advance(state, report(), T0 + 20)
    assert state.last_success == T0 + 20 and state.policy_since == T0
    state, _ = advance(state, report(policy_id="mspd1def"), T0 + 30)
    assert state.policy_since == T0 + 30


def test_state_json_round_trip() -> None:
    state, _ = advance(
        None, report(expiring(20), UNCOVERED, certificates=(("mx", "mx1.example.test", 20),)), T0
    )
    _, transitions = advance(state, report(), T0 + 10)
    saved = Saved({"example.test": state}, {"command": tuple(transitions)})
    assert transitions and state_from_json(state_to_json(saved)) == saved
    older = state_to_json(saved)
    del older["unsent_by_channel"]  # a file written before undelivered alerts were kept
    assert state_from_json(older) == Saved(saved.domains)
    many = Saved(unsent={"mail": tuple(transitions) * (UNSENT_KEPT + 1)})
    assert len(state_to_json(many)["unsent_by_channel"]["mail"]) == UNSENT_KEPT


def test_an_unsent_list_without_channel_is_owed_to_every_channel() -> None:
    """A state file from before the kept alerts were per channel: which channel failed was not
    recorded, so each one is tried again with them, as that version did."""
    state, _ = advance(None, report(UNCOVERED), T0)
    _, transitions = advance(state, report(), T0 + 10)
    older = state_to_json(Saved({"example.test": state}))
    del older["unsent_by_channel"]
    older["unsent"] = [t.to_json() for t in transitions]
    owed = tuple(transitions)
    assert state_from_json(older) == Saved({"example.test": state}, {"mail": owed, "command": owed})
    older["unsent"] = []
    assert state_from_json(older).unsent == {}


@pytest.mark.parametrize(
    "data",
    [None, {}, {"version": 2, "domains": {}}, {"version": 1, "domains": {"x": {"findings": 1}}}],
)
def test_malformed_state_is_refused(data: object) -> None:
    with pytest.raises(ValueError):
        state_from_json(data)


def test_empty_state() -> None:
    assert DomainState().findings == {}
