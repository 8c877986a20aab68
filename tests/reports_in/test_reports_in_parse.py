"""Received report parsing (RFC 8460 §4): the documented deviations accepted, the rest refused."""

from __future__ import annotations

import codecs
import contextlib
import gzip
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.errors import ReportRejected
from mta_sts_policyd.reports_in.model import policy_hash
from mta_sts_policyd.reports_in.parse import parse_report
from mta_sts_policyd.reports_in.unpack import documents_from_body, documents_from_message, gunzip
from support.received_reports import TESTING, as_mail, failure, report, sts_policy

DAY = date(2026, 11, 30)


def parse(doc: dict[str, Any]) -> Any:
    return parse_report(json.dumps(doc).encode())


def test_a_complete_report_is_read_field_by_field() -> None:
    doc = report("Mail Org A", DAY, ok=90, failed=4, details=[failure("certificate-expired")])
    got = parse(doc)
    assert got.organization == "Mail Org A"
    assert got.start == datetime(2026, 11, 30, tzinfo=UTC) and got.day == DAY
    (policy,) = got.policies
    assert (policy.policy_type, policy.policy_domain, policy.mode) == (
        "sts",
        "example.com",
        "testing",
    )
    assert policy.mx_hosts == ("mx1.example.com", "*.mx.example.com")
    assert (policy.successes, policy.failures) == (90, 4)
    (detail,) = policy.details
    assert detail.result_type == "certificate-expired" and detail.count == 3
    assert detail.receiving_mx == "mx1.example.com"
    assert detail.sending_ip == "2001:db8::25" and detail.receiving_ip == "192.0.2.10"
    assert policy.policy_hash == policy_hash(TESTING)


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (
            lambda d: d["date-range"].update({"start-datetime": "2026-11-30T00:00:00"}),
            lambda r: r.start == datetime(2026, 11, 30, tzinfo=UTC),
        ),
        (
            lambda d: d["date-range"].update({"start-datetime": "2026-11-30 00:00:00+00:00"}),
            lambda r: r.day == DAY,
        ),
        (
            lambda d: d.update({"report-id": "<abc@sender.example>"}),
            lambda r: r.report_id == "abc@sender.example",
        ),
        (
            lambda d: d["policies"][0]["policy"].update({"mx-host": "mx1.example.com"}),
            lambda r: r.policies[0].mx_hosts == ("mx1.example.com",),
        ),
        (
            lambda d: d["policies"][0].update({"failure-details": []}),
            lambda r: r.policies[0].details == (),
        ),
        (
            lambda d: d["policies"][0].update({"failure-details": None}),
            lambda r: r.policies[0].details == (),
        ),
        (
            lambda d: d["policies"][0]["summary"].update({"total-failure-session-count": "7"}),
            lambda r: r.policies[0].failures == 7,
        ),
        (
            lambda d: d["policies"][0]["policy"].update({"policy-domain": "EXAMPLE.COM."}),
            lambda r: r.policies[0].policy_domain == "example.com",
        ),
        (
            lambda d: d["policies"][0]["policy"].update({"policy-domain": "straße.de"}),
            lambda r: r.policies[0].policy_domain == "xn--strae-oqa.de",
        ),
    ],
    ids=[
        "no-zone",
        "space-separator",
        "angle-brackets",
        "mx-host-string",
        "details-empty",
        "details-null",
        "count-string",
        "domain-case-dot",
        "idn-domain",
    ],
)
def test_known_sender_deviations_are_accepted(change: Any, check: Any) -> None:
    doc = report("Org", DAY)
    change(doc)
    assert check(parse(doc))


def test_no_policy_found_without_policy_string() -> None:
    doc = report(
        "Org", DAY, policy={"policy-type": "no-policy-found", "policy-domain": "example.com"}
    )
    (policy,) = parse(doc).policies
    assert policy.policy_type == "no-policy-found" and policy.policy_strings == ()
    assert policy.policy_hash == "" and policy.mode is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.pop("organization-name"), "organization-name"),
        (lambda d: d.pop("report-id"), "report-id"),
        (lambda d: d.pop("date-range"), "date-range"),
        (lambda d: d["date-range"].update({"start-datetime": "yesterday"}), "RFC 3339"),
        (
            lambda d: d["date-range"].update({"start-datetime": "2026-12-05T00:00:00Z"}),
            "ends before",
        ),
        (lambda d: d.update({"policies": []}), "policies"),
        (lambda d: d["policies"][0]["policy"].update({"policy-type": "dane"}), "policy-type"),
        (
            lambda d: d["policies"][0]["policy"].update({"policy-domain": "not a name"}),
            "policy-domain",
        ),
        (lambda d: d["policies"][0]["summary"].pop("total-successful-session-count"), "count"),
        (
            lambda d: d["policies"][0]["summary"].update({"total-failure-session-count": -1}),
            "count",
        ),
        (
            lambda d: d["policies"][0].update({"failure-details": [{"failed-session-count": 1}]}),
            "result-type",
        ),
        (lambda d: d["policies"][0]["policy"].update({"mx-host": [1, 2]}), "mx-host"),
        (
            lambda d: d["policies"][0]["summary"].update({"total-failure-session-count": "¹"}),
            "count",
        ),
        (
            lambda d: d["policies"][0]["summary"].update({"total-failure-session-count": "١٢"}),
            "count",
        ),
    ],
)
def test_unusable_reports_are_rejected_with_the_reason(change: Any, reason: str) -> None:
    doc = report("Org", DAY)
    change(doc)
    with pytest.raises(ReportRejected, match=reason):
        parse(doc)


def test_not_json_and_not_an_object_are_rejected() -> None:
    with pytest.raises(ReportRejected, match="not JSON"):
        parse_report(b"\xff{")
    with pytest.raises(ReportRejected, match="not a JSON object"):
        parse_report(b"[1, 2]")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=30), inner, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_is_a_report_or_a_rejection(value: Any) -> None:
    with contextlib.suppress(ReportRejected):
        parse_report(json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_valid_report_with_any_field_replaced_is_a_report_or_a_rejection(
    data: st.DataObject,
) -> None:
    doc = report("Org", DAY, details=[failure("validation-failure")])
    target = data.draw(
        st.sampled_from(
            [
                doc,
                doc["date-range"],
                doc["policies"][0],
                doc["policies"][0]["policy"],
                doc["policies"][0]["summary"],
                doc["policies"][0]["failure-details"][0],
            ]
        )
    )
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(json_values)
    with contextlib.suppress(ReportRejected):
        parse(doc)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_report_or_a_rejection(raw: bytes) -> None:
    for unpack in (
        lambda b: documents_from_message(b),
        lambda b: documents_from_body(b, "application/tlsrpt+gzip"),
    ):
        try:
            for document in unpack(raw):
                parse_report(document)
        except ReportRejected:
            pass


# --- unpacking -----------------------------------------------------------------------------


@pytest.mark.parametrize("attachment", ["gzip", "octet", "json"])
def test_reports_are_found_in_mail_however_the_sender_labels_them(attachment: str) -> None:
    doc = report("Org", DAY)
    (document,) = documents_from_message(as_mail(doc, attachment=attachment))
    assert json.loads(document) == doc


@pytest.mark.parametrize(
    "saved",
    [
        lambda doc: json.dumps(doc).encode(),  # one line: a mail parser reads a header in it
        lambda doc: json.dumps(doc, indent=2).encode(),
        lambda doc: codecs.BOM_UTF8 + b"\r\n  " + json.dumps(doc).encode(),
        lambda doc: gzip.compress(json.dumps(doc).encode()),
    ],
    ids=["json-one-line", "json-indented", "json-bom-and-space", "gzip"],
)
def test_a_saved_report_file_is_taken_bare_json_as_well_as_gzip(
    saved: Callable[[dict[str, Any]], bytes],
) -> None:
    """`reports-in < report.json` was refused while `reports-in < report.json.gz` was taken:
    compression is only a SHOULD (RFC 8460 §5.3), so both are report files."""
    doc = report("Org", DAY)
    (document,) = documents_from_message(saved(doc))
    assert parse_report(document).organization == "Org"


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"", "read nothing (0 bytes)"),
        (b"hello world\n", "read 12 bytes, starting b'hello world\\n'"),
        (b"PK\x03\x04" + b"\0" * 40, "read 44 bytes, starting b'PK\\x03\\x04\\x00"),
    ],
    ids=["empty", "text", "zip"],
)
def test_input_that_is_no_message_gzip_or_json_is_named_as_what_was_read(
    raw: bytes, said: str
) -> None:
    with pytest.raises(ReportRejected) as caught:
        documents_from_message(raw)
    assert caught.value.reason.startswith(
        "input is neither a mail message, gzip nor a JSON report: "
    )
    assert said in caught.value.reason


def test_a_bare_report_over_the_cap_is_refused() -> None:
    with pytest.raises(ReportRejected, match="report larger than 100 bytes"):
        documents_from_message(b"{" + b" " * 100 + b"}", limit=100)


def test_mail_without_a_report_is_rejected() -> None:
    raw = b"From: a@b.example\r\nSubject: hello\r\n\r\njust text\r\n"
    with pytest.raises(ReportRejected, match="no TLS report attached"):
        documents_from_message(raw)


def test_a_gzip_bomb_is_refused_after_reading_at_most_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(ReportRejected, match="gzip bomb"):
        gunzip(bomb, limit=10 * 1024 * 1024)


def test_truncated_and_invalid_gzip_are_refused() -> None:
    data = gzip.compress(json.dumps(report("Org", DAY)).encode())
    with pytest.raises(ReportRejected, match="truncated"):
        gunzip(data[: len(data) // 2])
    with pytest.raises(ReportRejected, match="not valid gzip"):
        gunzip(b"\x1f\x8bnot gzip at all")


def test_https_bodies_by_content_type() -> None:
    body = json.dumps(report("Org", DAY)).encode()
    assert documents_from_body(gzip.compress(body), "application/tlsrpt+gzip") == [body]
    assert documents_from_body(body, "application/tlsrpt+json; charset=utf-8") == [body]
    with pytest.raises(ReportRejected, match="not a TLS report"):
        documents_from_body(body, "text/html")


def test_sts_policy_helper_matches_the_rfc_field_names() -> None:
    assert set(sts_policy()) == {"policy-type", "policy-string", "policy-domain", "mx-host"}
