"""Issue 11 item 12: a plaintext delivery to a `testing` domain is a session of that domain.

The daemon answers NOTFOUND for a testing policy, Postfix delivers at `may`, and when the MX
offers no STARTTLS it logs only `status=sent` (real capture may-no-starttls.log). The log
follower counts that delivery as a `starttls-not-supported` failure under the testing policy.
Lines marked "hand-written" are variants Postfix 3.7 cannot be made to log here.
"""

from __future__ import annotations

import datetime as dt

import pytest

from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions
from mta_sts_policyd.tlsrpt.model import PolicyRef, PolicyType, SessionEvent
from support import TESTS_DIR

pytestmark = pytest.mark.fault

FIXTURES = TESTS_DIR / "fixtures" / "maillog"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC).timestamp()
DOMAIN = "may-no-starttls.example.test"
MX = "mx1.may-no-starttls.example.test"
TESTING = PolicyRef(
    PolicyType.STS,
    DOMAIN,
    ("version: STSv1", "mode: testing", f"mx: {MX}", "max_age: 86400"),
    (MX,),
)


class Sink:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def submit(self, event: SessionEvent) -> None:
        self.events.append(event)


class PlaintextStub:
    """plaintext_policy stand-in: DOMAIN is in testing mode with MX as its MX host."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def __call__(self, domain: str, host: str, when: float) -> PolicyRef | None:
        self.asked.append((domain, host))
        return TESTING if (domain, host) == (DOMAIN, MX) else None


def no_policy(domain: str, when: float) -> None:
    return None


def run(lines: list[str]) -> tuple[MaillogSessions, list[SessionEvent], PlaintextStub]:
    sink, testing = Sink(), PlaintextStub()
    sessions = MaillogSessions(no_policy, sink, plaintext_policy=testing)
    for line in lines:
        sessions.feed_line(line, NOW)
    return sessions, sink.events, testing


def capture(name: str) -> list[str]:
    return (FIXTURES / f"{name}.log").read_text().splitlines()


def delivery_line(lines: list[str]) -> str:
    (line,) = [ln for ln in lines if " to=<" in ln]
    return line


def test_real_plaintext_delivery_to_a_testing_domain_is_a_starttls_failure() -> None:
    sessions, events, testing = run(capture("may-no-starttls"))
    assert testing.asked == [(DOMAIN, MX)]
    (event,) = events
    assert event.report_domain == DOMAIN and event.policy == TESTING
    assert not event.success
    (detail,) = event.failures
    assert detail.result_type.value == "starttls-not-supported"
    assert (detail.receiving_mx_hostname, detail.receiving_ip) == (MX, "127.0.0.1")
    assert detail.failure_reason_code == "starttls-not-offered"
    assert (sessions.counters.sessions, sessions.counters.plaintext) == (1, 1)
    assert event.timestamp == dt.datetime(2026, 11, 22, 22, 53, 42, tzinfo=dt.UTC).timestamp()


def test_without_a_testing_policy_a_plaintext_delivery_is_still_no_session() -> None:
    lines = [ln.replace(DOMAIN, "other.example.test") for ln in capture("may-no-starttls")]
    sessions, events, _ = run(lines)
    assert events == [] and sessions.counters.sessions == 0


def test_tls_deliveries_of_a_testing_domain_are_not_plaintext() -> None:
    lines = [ln.replace("may-trusted", "may-no-starttls") for ln in capture("may-trusted")]
    sessions, events, testing = run(lines)
    assert testing.asked == []  # a handshake was logged: the session is judged as before
    assert [e.policy.policy_type for e in events] == [PolicyType.NO_POLICY_FOUND]
    assert sessions.counters.plaintext == 0


def test_handwritten_variants() -> None:
    # hand-written: the forms of the delivery line around the real one
    real = delivery_line(capture("may-no-starttls"))
    second_rcpt = real.replace("user1@", "user2@")
    cached = real.replace("delay=0.05", "conn_use=2, delay=0.05")
    refused_rcpt = real.replace(
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)",
        f"dsn=4.2.0, status=deferred (host {MX}[127.0.0.1] said: 450 4.2.0 busy "
        "(in reply to RCPT TO command))",
    )
    greeting = real.replace(
        "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)",
        f"dsn=4.0.0, status=deferred (host {MX}[127.0.0.1] refused to talk to me: 421 busy)",
    )
    no_relay = real.split(", relay=")[0] + (
        ", relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred "
        f"(connect to {MX}[127.0.0.1]:25: Connection refused)"
    )
    assert len(run([real, second_rcpt])[1]) == 1  # one delivery, two recipients: one session
    assert run([cached])[1] == []  # a cached connection is no new session
    assert len(run([refused_rcpt])[1]) == 1  # EHLO passed without STARTTLS
    assert run([greeting])[1] == []  # no EHLO: nothing known about STARTTLS
    assert run([no_relay])[1] == []
