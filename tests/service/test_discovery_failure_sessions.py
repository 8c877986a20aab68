"""Issue 11 item 13: a discovery failure counts once per delivery session seen, not per lookup.

The real daemon process follows a mail log; the policy host shows an expired certificate
(`sts-webpki-invalid`); Postfix's lookup (a socketmap client) and an operator's real `postmap -q`
both ask for the domain; the log then shows the one delivery (real capture may-trusted.log,
re-stamped to now). The report has one failure session, not two failures and a success.
Without any session source configured, each lookup still counts (the documented fallback).
FailureSessions itself is pure: its window rules are checked against a brute-force oracle.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import StsWorld
from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.service.failure_sessions import SLACK, FailureSessions
from mta_sts_policyd.tlsrpt.model import (
    DomainDay,
    FailureDetail,
    PolicyRef,
    PolicyType,
    SessionEvent,
)
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support import TESTS_DIR
from support.daemon_process import POSTMAP, DaemonProcess, postfix_config_dir, postmap

pytestmark = pytest.mark.fault

CAPTURE = TESTS_DIR / "fixtures" / "maillog" / "may-trusted.log"
DOMAIN = "may-trusted.example.test"
ENFORCE = f"version: STSv1\nmode: enforce\nmx: *.{DOMAIN}\nmax_age: 86400\n"


def restamped(now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%b %e %H:%M:%S")
    return "".join(stamp + line[15:] + "\n" for line in CAPTURE.read_text().splitlines())


def reporting(maillog: Path | None) -> dict[str, dict[str, object]]:
    tables: dict[str, dict[str, object]] = {
        "tlsrpt": {
            "enabled": True,
            "socket": "",
            "organization_name": "Example Sender",
            "contact_info": "tlsrpt@sender.test",
            "envelope_sender": "tlsrpt@sender.test",
            "allow_unsigned": True,
        }
    }
    if maillog is not None:
        tables["maillog"] = {"enabled": True, "path": str(maillog)}
    return tables


def report_of(daemon: DaemonProcess) -> DomainDay:
    with TlsRptStore(daemon.state_dir / "tlsrpt.sqlite") as store:
        (day,) = store.domain_days(datetime.now(UTC).date(), DOMAIN)
    return day


def lookups(daemon: DaemonProcess, tmp_path: Path) -> None:
    """Postfix's lookup, then an operator's `postmap -q` (a second client) if installed."""
    assert daemon.query(DOMAIN) == b"NOTFOUND "  # fail open: remote trouble never defers
    if os.path.exists(POSTMAP):
        table = f"socketmap:inet:{daemon.address}:postfix"
        assert postmap(postfix_config_dir(tmp_path / "pf"), table, DOMAIN) == (1, "")
    else:
        assert daemon.query(DOMAIN) == b"NOTFOUND "


@pytest.mark.slow
def test_one_delivery_with_an_expired_policy_certificate_is_one_failure(
    sts_world: StsWorld, tmp_path: Path
) -> None:
    sts_world.publish(DOMAIN, ENFORCE, cert="expired")
    maillog = tmp_path / "mail.log"
    maillog.write_text("")
    with DaemonProcess.for_servers(sts_world.dns, sts_world.https, reporting(maillog)) as daemon:
        daemon.start()
        daemon.wait_for_log("event=discovery-failures-counted per=session")
        lookups(daemon, tmp_path)
        with maillog.open("a") as fh:
            fh.write(restamped(time.time() + 1))
        time.sleep(2.5)  # the follower polls every second
        assert daemon.stop(signal.SIGTERM) == 0
        day = report_of(daemon)
    (policy,) = day.policies
    assert policy.policy.policy_type is PolicyType.STS
    assert (policy.successes, policy.failures) == (0, 1)
    ((detail, count),) = policy.details
    assert (detail.result_type, count) == (ResultType.STS_WEBPKI_INVALID, 1)


@pytest.mark.slow
def test_without_a_session_source_each_lookup_counts(sts_world: StsWorld, tmp_path: Path) -> None:
    sts_world.publish(DOMAIN, ENFORCE, cert="expired")
    with DaemonProcess.for_servers(sts_world.dns, sts_world.https, reporting(None)) as daemon:
        daemon.start()
        daemon.wait_for_log("event=discovery-failures-counted per=lookup")
        lookups(daemon, tmp_path)
        assert daemon.stop(signal.SIGTERM) == 0
        (policy,) = report_of(daemon).policies
    assert (policy.successes, policy.failures) == (0, 2)


# --- the pure rule --------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def submit(self, event: SessionEvent) -> None:
        self.events.append(event)


def failure(at: float) -> SessionEvent:
    ref = PolicyRef(PolicyType.STS, DOMAIN)
    detail = FailureDetail(ResultType.STS_POLICY_FETCH_ERROR, failure_reason_code="HTTP 500")
    return SessionEvent(at, DOMAIN, ref, success=False, failures=(detail,))


def session(at: float, kind: PolicyType = PolicyType.NO_POLICY_FOUND) -> SessionEvent:
    return SessionEvent(at, DOMAIN, PolicyRef(kind, DOMAIN), success=True, tlsrpt_record="r")


def test_rule_examples() -> None:
    in_force: set[int] = set()
    sink = Sink()
    sessions = FailureSessions(sink, lambda d, at: int(at) in in_force, window=100)
    for at in (1000.0, 1050.0, 1400.0):  # two runs: 1000-1050, 1400
        sessions.note(failure(at))
    sessions.submit(session(999.0))  # whole-second stamp just before the lookup
    sessions.submit(session(1150.0))  # last failed lookup + window
    sessions.submit(session(1151.0))  # after the window: not the failure's session
    sessions.submit(session(1010.0, PolicyType.STS))  # a policy was applied: Postfix judged it
    in_force.add(1420)
    sessions.submit(session(1420.0))  # the domain was fixed meanwhile
    sessions.submit(session(1430.0))
    kinds = [(e.timestamp, e.policy.policy_type, e.success) for e in sink.events]
    assert kinds == [
        (999.0, PolicyType.STS, False),
        (1150.0, PolicyType.STS, False),
        (1151.0, PolicyType.NO_POLICY_FOUND, True),
        (1010.0, PolicyType.STS, True),
        (1420.0, PolicyType.NO_POLICY_FOUND, True),
        (1430.0, PolicyType.STS, False),
    ]
    assert sink.events[0].tlsrpt_record == "r" and sessions.converted == 3


@given(
    notes=st.lists(st.integers(0, 2000), max_size=8),
    at=st.integers(-10, 3000),
    forced=st.booleans(),
)
def test_converted_exactly_within_a_run_of_failed_lookups(
    notes: list[int], at: int, forced: bool
) -> None:
    window = 100
    sink = Sink()
    sessions = FailureSessions(sink, lambda d, t: forced, window=window)
    for n in sorted(notes):
        sessions.note(failure(float(n)))
    sessions.submit(session(float(at)))
    runs: list[list[int]] = []  # oracle: lookups closer than the window form one run
    for n in sorted(notes):
        if runs and n <= runs[-1][-1] + window:
            runs[-1].append(n)
        else:
            runs.append([n])
    inside = any(r[0] - SLACK <= at <= r[-1] + window for r in runs[-4:])
    (event,) = sink.events
    assert (event.policy.policy_type is PolicyType.STS) == (inside and not forced)
