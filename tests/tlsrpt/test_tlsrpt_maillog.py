"""Mail-log TLS sessions (RFC 8460 §4; docs/conformance.md: PF-maillog-summary and after): real
Postfix 3.7 captures first.

Fixtures in tests/fixtures/maillog/*.log are real (see README.md there). Lines marked
"hand-written" are forms Postfix 3.7 cannot produce here (3.10 TLSRPT lines, tlsproxy
reuse, <= 3.5 name checks, CA-depth and rarer verification failures).
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.tlsrpt.maillog.sessions import STALE_AFTER, MaillogSessions
from mta_sts_policyd.tlsrpt.maillog.smtplog import classify_cert_failure, parse_message
from mta_sts_policyd.tlsrpt.maillog.syslogline import LogLine, parse_syslog
from mta_sts_policyd.tlsrpt.model import PolicyRef, PolicyType, SessionEvent
from support import TESTS_DIR

FIXTURES = TESTS_DIR / "fixtures" / "maillog"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC).timestamp()
STS = ("version: STSv1", "mode: enforce", "mx: *.example.test", "max_age: 86400")


class Sink:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def submit(self, event: SessionEvent) -> None:
        self.events.append(event)


class Policies:
    """policy_at stand-in: STS for the given domains, and a record of every question."""

    def __init__(self, *sts_domains: str) -> None:
        self.sts = set(sts_domains)
        self.asked: list[tuple[str, float]] = []

    def __call__(self, domain: str, when: float) -> PolicyRef | None:
        self.asked.append((domain, when))
        if domain in self.sts:
            return PolicyRef(PolicyType.STS, domain, STS, ("*.example.test",))
        return None


def run(lines: list[str], *sts: str) -> tuple[MaillogSessions, list[SessionEvent], Policies]:
    sink, policies = Sink(), Policies(*sts)
    sessions = MaillogSessions(policies, sink)
    for line in lines:
        sessions.feed_line(line, NOW)
    return sessions, sink.events, policies


def fixture(name: str) -> list[str]:
    return (FIXTURES / f"{name}.log").read_text().splitlines()


def outcome(event: SessionEvent) -> list[tuple[str, str | None, str | None]]:
    return [
        (f.result_type.value, f.receiving_mx_hostname, f.failure_reason_code)
        for f in event.failures
    ]


# --- real captures: each case once with the STS policy the daemon would have answered -------

FAIL_CASES = [
    ("secure-wrong-name", "certificate-host-mismatch", "hostname-mismatch"),
    ("secure-expired", "certificate-expired", "certificate-expired"),
    ("secure-self-signed", "certificate-not-trusted", "self-signed-certificate"),
    ("secure-foreign-ca", "certificate-not-trusted", "untrusted-issuer"),
    ("secure-no-starttls", "starttls-not-supported", "starttls-not-offered"),
    ("secure-refused-starttls", "starttls-not-supported", "starttls-refused-454"),
    ("secure-broken-handshake", "validation-failure", "handshake-failure"),
    ("encrypt-no-starttls", "starttls-not-supported", "starttls-not-offered"),
]


@pytest.mark.parametrize(("case", "result", "code"), FAIL_CASES)
def test_real_failure_under_sts_policy(case: str, result: str, code: str) -> None:
    domain = f"{case}.example.test"
    _, events, _ = run(fixture(case), domain)
    assert len(events) == 1
    event = events[0]
    assert (event.report_domain, event.success) == (domain, False)
    assert event.policy.policy_type is PolicyType.STS
    assert outcome(event) == [(result, f"mx1.{domain}", code)]
    assert event.failures[0].receiving_ip == "127.0.0.1"


def test_real_verified_session_is_an_sts_success() -> None:
    _, events, policies = run(fixture("secure-verified"), "secure-verified.example.test")
    assert [(e.report_domain, e.success, e.failures) for e in events] == [
        ("secure-verified.example.test", True, ())
    ]
    # policy_at is asked about the recipient domain at the time of the handshake line
    (domain, when), *_ = policies.asked
    assert domain == "secure-verified.example.test"
    first_tls = next(ln for ln in fixture("secure-verified") if "TLS connection" in ln)
    stamp = dt.datetime.strptime(first_tls[:15] + " 2026", "%b %d %H:%M:%S %Y")
    assert when == stamp.replace(tzinfo=dt.UTC).timestamp()


def test_non_final_mx_failure_then_success_are_two_sessions() -> None:
    domain = "secure-mx-fallback.example.test"
    _, events, _ = run(fixture("secure-mx-fallback"), domain)
    assert [(e.success, outcome(e)) for e in events] == [
        (False, [("certificate-host-mismatch", f"mx1.{domain}", "hostname-mismatch")]),
        (True, []),
    ]


def test_second_recipient_of_one_delivery_is_not_a_second_session() -> None:
    sessions, events, _ = run(
        fixture("secure-two-recipients"), "secure-two-recipients.example.test"
    )
    assert len(events) == 1 and events[0].success
    assert sessions.counters.sessions == 1


@pytest.mark.parametrize("case", ["may-trusted", "may-untrusted", "may-untrusted-keyword"])
def test_no_policy_found_established_may_session_is_a_success(case: str) -> None:
    _, events, _ = run(fixture(case))
    assert len(events) == 1
    event = events[0]
    assert event.success and event.failures == ()
    assert event.policy == PolicyRef(PolicyType.NO_POLICY_FOUND, f"{case}.example.test")


def test_no_policy_found_broken_handshake_is_a_failure() -> None:
    _, events, _ = run(fixture("may-broken-handshake"))
    assert [(e.policy.policy_type, e.success, outcome(e)[0][0]) for e in events] == [
        (PolicyType.NO_POLICY_FOUND, False, "validation-failure")
    ]


def test_plaintext_delivery_without_tls_lines_is_no_session() -> None:
    sessions, events, _ = run(fixture("may-no-starttls"))
    assert events == [] and sessions.counters.sessions == 0


def test_sts_testing_domain_unverified_session_is_unjudged() -> None:
    # At `may` (testing mode: the daemon answered NOTFOUND) Postfix checks no name: the log
    # cannot say whether the session complied, so it is not counted either way.
    sessions, events, _ = run(fixture("may-trusted"), "may-trusted.example.test")
    assert events == [] and sessions.counters.unjudged == 1


def test_sts_testing_domain_failure_seen_with_untrusted_keyword_is_reported() -> None:
    domain = "may-expired-keyword.example.test"
    _, events, _ = run(fixture("may-expired-keyword"), domain)
    assert [(e.success, outcome(e)[0][0]) for e in events] == [(False, "certificate-expired")]


def test_irrelevant_lines_are_ignored_and_counted() -> None:
    sessions, _, _ = run(fixture("secure-verified"), "secure-verified.example.test")
    lines = len(fixture("secure-verified"))
    assert sessions.counters.lines == lines
    assert sessions.counters.ignored == lines - 2  # only the summary and the status line count
    assert sessions.counters.not_understood == 0


# --- syslog envelopes -------------------------------------------------------------------------

MSG = "Verified TLS connection established to mx.example.test[192.0.2.1]:25: TLSv1.3 with cipher X"


@pytest.mark.parametrize(
    ("line", "stamp"),
    [
        (f"Nov 23 11:00:00 h postfix/smtp[42]: {MSG}", "2026-11-23T11:00:00+00:00"),
        (f"Nov  3 11:00:00.250000 h postfix/smtp[42]: {MSG}", "2026-11-03T11:00:00.25+00:00"),
        (f"<22>Nov 23 11:00:00 h postfix/smtp[42]: {MSG}", "2026-11-23T11:00:00+00:00"),
        (f"2026-11-23T12:00:00.5+01:00 h postfix/smtp[42]: {MSG}", "2026-11-23T11:00:00.5+00:00"),
        (f"2026-11-23T12:00:00+0100 h postfix/smtp[42]: {MSG}", "2026-11-23T11:00:00+00:00"),
        (f"2026-11-23T11:00:00Z h postfix/smtp[42]: {MSG}", "2026-11-23T11:00:00+00:00"),
        (f"2026-11-23T11:00:00 h postfix/smtp[42]: {MSG}", "2026-11-23T11:00:00+00:00"),
        (f"<22>1 2026-11-23T11:00:00Z h postfix/smtp 42 - - {MSG}", "2026-11-23T11:00:00+00:00"),
        (
            f'<22>1 2026-11-23T11:00:00Z h postfix/smtp 42 - [x@1 a="\\]\\""] \ufeff{MSG}',
            "2026-11-23T11:00:00+00:00",
        ),
    ],
)
def test_syslog_envelope_forms(line: str, stamp: str) -> None:
    rec = parse_syslog(line, now=NOW, tz=dt.UTC)
    assert rec == LogLine(
        dt.datetime.fromisoformat(stamp).timestamp(), "h", "postfix/smtp", 42, MSG
    )


def test_bsd_timestamp_from_last_year_when_read_just_after_new_year() -> None:
    jan_first = dt.datetime(2027, 1, 1, 0, 5, tzinfo=dt.UTC).timestamp()
    rec = parse_syslog(f"Dec 31 23:59:59 h postfix/smtp[1]: {MSG}", now=jan_first, tz=dt.UTC)
    assert rec is not None
    assert rec.timestamp == dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()


def test_bsd_timestamp_uses_the_given_zone() -> None:
    zone = dt.timezone(dt.timedelta(hours=2))
    rec = parse_syslog(f"Nov 23 11:00:00 h postfix/smtp[1]: {MSG}", now=NOW, tz=zone)
    assert rec is not None
    assert rec.timestamp == dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "Feb 30 11:00:00 h postfix/smtp[1]: x",
        "Foo 12 11:00:00 h p[1]: x",
        "2026-13-01T00:00:00Z h p[1]: x",
        "2026-01-01T00:00:00+25:00 h p[1]: x",
    ],
)
def test_unknown_envelopes_are_not_understood(line: str) -> None:
    sessions, _, _ = run([line])
    assert parse_syslog(line, now=NOW, tz=dt.UTC) is None
    assert sessions.counters.not_understood == 1


def _reprefix(line: str, form: str) -> str:
    m = re.match(r"(\w{3} +\d+ [\d:]+) (\S+) (\S+)\[(\d+)\]: (.*)", line)
    assert m is not None
    when = dt.datetime.strptime(m[1] + " 2026", "%b %d %H:%M:%S %Y")
    iso = when.isoformat() + ".123456+00:00"
    if form == "rsyslog":
        return f"{iso} {m[2]} {m[3]}[{m[4]}]: {m[5]}"
    return f"<22>1 {iso} {m[2]} {m[3]} {m[4]} - - {m[5]}"


@pytest.mark.parametrize("form", ["rsyslog", "rfc5424"])
def test_same_sessions_whatever_the_syslog_format(form: str) -> None:
    lines = fixture("secure-mx-fallback")
    _, plain, _ = run(lines, "secure-mx-fallback.example.test")
    _, other, _ = run([_reprefix(ln, form) for ln in lines], "secure-mx-fallback.example.test")
    assert [(e.success, e.failures) for e in other] == [(e.success, e.failures) for e in plain]
    assert [round(e.timestamp) for e in other] == [round(e.timestamp) for e in plain]


# --- hand-written: forms Postfix 3.7 does not produce in our captures ------------------

P = "Nov 23 10:00:0{} relay postfix/smtp[7]: "
PEER = "mx.example.test[192.0.2.7]:25"
DONE = "ABCDE12345: to=<u@example.test>, relay=mx.example.test[192.0.2.7]:25, delay=1, "
DEFERRED = DONE + "delays=0/0/0/0, dsn=4.7.5, status=deferred (Server certificate not verified)"
SENT = DONE + "delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)"


# hand-written: message | result type | reason code
VERIFY_FAILURES = """
CA certificate verification failed for {}: certificate has expired
    | certificate-expired | certificate-expired
server certificate verification failed for {}: certificate not yet valid
    | validation-failure | certificate-not-yet-valid
certificate verification failed for {}: not trusted by local or TLSA policy
    | certificate-not-trusted | not-trusted
certificate verification failed for {}: not designated for use as a server certificate
    | validation-failure | not-designated-for-use-as-a-server-certificate
certificate verification failed for {}: certificate chain longer than limit(1)
    | certificate-not-trusted | chain-too-long
certificate verification failed for {}: external policy failure (sts_webpki_invalid)
    | sts-webpki-invalid | sts-webpki-invalid
certificate verification failed for {}: external policy failure (no_such_type)
    | validation-failure | no-such-type
server certificate verification failed for {}: num=20:unable to get local issuer certificate
    | certificate-not-trusted | unable-to-get-local-issuer-certificate
server certificate verification failed for {}: num=10:certificate has expired
    | certificate-expired | certificate-expired
server certificate verification failed for {}: num=26:unsupported certificate purpose
    | validation-failure | unsupported-certificate-purpose
{}: re-using session with untrusted certificate, look for details earlier in the log
    | certificate-not-trusted | untrusted-reused
"""


@pytest.mark.parametrize(
    ("why", "result", "code"),
    [
        tuple(part.strip() for part in entry.split("|"))
        for entry in VERIFY_FAILURES.strip().replace("\n    |", " |").splitlines()
    ],
)
def test_handwritten_verification_failures(why: str, result: str, code: str) -> None:
    lines = [
        P.format(1) + why.format(PEER),
        P.format(2) + f"Untrusted TLS connection established to {PEER}: TLSv1.2 with cipher X",
        P.format(3) + DEFERRED,
    ]
    _, events, _ = run(lines, "example.test")
    assert [outcome(e) for e in events] == [[(result, "mx.example.test", code)]]


@pytest.mark.parametrize(
    ("level", "result"),
    [("Trusted", "certificate-host-mismatch"), ("Untrusted", "certificate-not-trusted"),
     ("Anonymous", "validation-failure")],
)  # fmt: skip
def test_handwritten_unverified_without_failure_line(level: str, result: str) -> None:
    # Postfix <= 3.5 logs no line for a name mismatch: the summary says Trusted
    # (docs/conformance.md: PF-maillog-verify-failure).
    lines = [
        P.format(1) + f"{level} TLS connection established to {PEER}: TLSv1.2 with cipher X",
        P.format(2) + DEFERRED,
    ]
    _, events, _ = run(lines, "example.test")
    assert [outcome(e)[0][0] for e in events] == [result]


def test_handwritten_tlsrpt_and_reused_lines_are_not_counted() -> None:
    lines = [
        P.format(1) + "TLSRPT: status=success, domain=example.test, receiving_mx=" + PEER[:-3],
        P.format(2) + f"Verified TLS connection reused to {PEER}: TLSv1.3 with cipher X",
        P.format(3) + SENT.replace("delay=1", "conn_use=2, delay=1"),
    ]
    sessions, events, _ = run(lines, "example.test")
    assert events == []
    assert sessions.counters.ignored == 1  # the TLSRPT line; the other two are understood


def test_ip_literal_relay_has_no_mx_hostname() -> None:
    peer = "192.0.2.9[192.0.2.9]:25"
    lines = [
        P.format(1) + f"certificate verification failed for {peer}: self-signed certificate",
        P.format(2) + DEFERRED.replace("mx.example.test[192.0.2.7]", "192.0.2.9[192.0.2.9]"),
    ]
    _, events, _ = run(lines, "example.test")
    (detail,) = events[0].failures
    assert (detail.receiving_mx_hostname, detail.receiving_ip) == (None, "192.0.2.9")


def test_idn_recipient_domain_is_reported_as_a_label() -> None:
    lines = [
        P.format(1) + f"Trusted TLS connection established to {PEER}: TLSv1.3 with cipher X",
        P.format(2) + SENT.replace("u@example.test", "u@bücher.example"),
    ]
    _, events, policies = run(lines)
    assert events[0].report_domain == "xn--bcher-kva.example"
    assert policies.asked[0][0] == "xn--bcher-kva.example"


def test_ip_literal_recipient_is_unattributed() -> None:
    lines = [
        P.format(1) + f"Trusted TLS connection established to {PEER}: TLSv1.3 with cipher X",
        P.format(2) + SENT.replace("u@example.test", "u@[192.0.2.1]"),
    ]
    sessions, events, _ = run(lines)
    assert events == [] and sessions.counters.unattributed == 1


def test_interleaved_processes_keep_their_own_sessions() -> None:
    a = fixture("secure-wrong-name")
    b = fixture("secure-verified")
    mixed = [ln for pair in zip(a, b, strict=False) for ln in pair] + a[len(b) :] + b[len(a) :]
    _, events, _ = run(mixed, "secure-wrong-name.example.test", "secure-verified.example.test")
    got = sorted((e.report_domain, e.success) for e in events)
    assert got == [
        ("secure-verified.example.test", True),
        ("secure-wrong-name.example.test", False),
    ]


def test_attempts_without_delivery_line_expire_as_unattributed() -> None:
    late = dt.datetime.fromtimestamp(NOW - 86400 + STALE_AFTER + 60, dt.UTC)
    lines = [
        P.format(1) + f"Trusted TLS connection established to {PEER}: TLSv1.3 with cipher X",
        late.strftime("%b %d %H:%M:%S") + " relay postfix/smtp[8]: " + MSG,
    ]
    lines[0] = (dt.datetime.fromtimestamp(NOW - 86400, dt.UTC)).strftime("%b %d %H:%M:%S") + lines[
        0
    ][15:]
    sessions, events, _ = run(lines)
    assert events == [] and sessions.counters.unattributed == 1


def test_classify_unknown_text_is_validation_failure_with_bounded_code() -> None:
    result, code = classify_cert_failure("Something /CN=very long " + "x" * 300)
    assert result is ResultType.VALIDATION_FAILURE
    assert len(code) <= 64 and re.fullmatch(r"[a-z0-9-]+", code)


# --- properties -------------------------------------------------------------------------------

REAL = [ln for f in sorted(FIXTURES.glob("*.log")) for ln in f.read_text().splitlines()]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_never_raise_on_arbitrary_text(text: str) -> None:
    parse_syslog(text, now=NOW, tz=dt.UTC)
    parse_message(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(REAL), st.text(max_size=80)), max_size=30), st.data())
def test_assembly_never_raises_and_counts_every_line(lines: list[str], data: st.DataObject) -> None:
    # Real lines shuffled with garbage and cut at random places: never an exception, every line
    # counted exactly once, and every event well-formed.
    cut = [
        ln[: data.draw(st.integers(0, len(ln)))] if ln and data.draw(st.booleans()) else ln
        for ln in lines
    ]
    sessions, events, _ = run(cut, *{f"{f.stem}.example.test" for f in FIXTURES.glob("*.log")})
    c = sessions.counters
    assert c.lines == len(cut)
    assert c.not_understood + c.ignored <= c.lines
    assert c.sessions == len(events)
    for event in events:
        assert event.success == (event.failures == ())
        assert event.policy.policy_domain == event.report_domain
