"""Report document (RFC 8460 §4, §5, §7): strict schema, golden, parsedmarc."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import os
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.tlsrpt.message import build_message
from mta_sts_policyd.tlsrpt.model import (
    DomainDay,
    FailureDetail,
    PolicyAggregate,
    PolicyRef,
    PolicyType,
    SessionEvent,
)
from mta_sts_policyd.tlsrpt.report import ReportSettings, build_report
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support import TESTS_DIR
from support.tlsrpt_validate import fixed_events, parsedmarc_parse, validate_report

GOLDEN = TESTS_DIR / "golden" / "tlsrpt-reports.json"
SETTINGS = ReportSettings("Example Sender Org", "tlsrpt-contact@sender.example")
DAY = date(2026, 11, 21)
STS = PolicyRef(
    PolicyType.STS,
    "example.com",
    ("version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400"),
    ("mx.example.com",),
)


def _docs(tmp_path: Path) -> list:
    with TlsRptStore(tmp_path / "r.db") as store:
        for e in fixed_events():
            store.submit(e)
        store.flush()
        return [build_report(dd, SETTINGS) for dd in store.domain_days(DAY)]


def test_golden_reports_for_fixed_event_set(tmp_path: Path) -> None:
    """RFC 8460 §4 as one byte-stable snapshot (regenerate with UPDATE_GOLDEN=1)."""
    got = {d.filename: json.loads(d.json_bytes) for d in _docs(tmp_path)}
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
    assert got == json.loads(GOLDEN.read_text())


def test_every_fixed_report_passes_strict_schema(tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    assert len(docs) == 4
    for doc in docs:
        validate_report(doc.json_bytes)


def test_parsedmarc_accepts_every_fixed_report(tmp_path: Path) -> None:
    """parsedmarc: parse_smtp_tls_report_json accepts each report (sys4 fails no-policy-found)."""
    docs = _docs(tmp_path)
    results = parsedmarc_parse([("json", d.json_bytes) for d in docs])
    assert all(r["ok"] for r in results), results
    domains = {p["policy_domain"] for r in results for p in r["report"]["policies"]}
    assert domains == {
        "company-y.example",
        "other.example",
        "hand.example",
        "xn--bcher-kva.example",
    }


def test_no_policy_found_carries_report_domain_as_policy_domain(tmp_path: Path) -> None:
    """docs/conformance.md: RPT-4.4-policy-domain-always (sys4#51)."""
    doc = next(d for d in _docs(tmp_path) if d.report_domain == "other.example")
    policy = json.loads(doc.json_bytes)["policies"][0]["policy"]
    assert policy == {"policy-type": "no-policy-found", "policy-domain": "other.example"}


def test_idn_domain_is_a_label_everywhere(tmp_path: Path) -> None:
    """RFC 8460 §4.4: JSON, filename, Subject and header domain are A-labels."""
    doc = next(d for d in _docs(tmp_path) if "bcher" in d.report_domain)
    assert doc.report_domain == "xn--bcher-kva.example"
    body = doc.json_bytes.decode()
    assert "ü" not in doc.filename and "ü" not in doc.subject
    assert json.loads(body)["policies"][0]["policy"]["policy-domain"] == "xn--bcher-kva.example"
    # policy-string is the policy text as published and stays verbatim.
    assert json.loads(body)["policies"][0]["policy"]["mx-host"] == ["mx.xn--bcher-kva.example"]
    detail = json.loads(body)["policies"][0]["failure-details"][0]
    assert detail["receiving-ip"] == "2001:db8::25"  # RFC 8460 §4.4: RFC 5952 text
    assert detail["sending-mta-ip"] == "2001:db8::1"


def test_report_for_strasse_de_goes_to_its_idna2008_a_label(tmp_path: Path) -> None:
    """RFC 8460 §4.4 / RFC 8461 §3.2: `straße.de` is `xn--strae-oqa.de` in every place a report
    names it. IDNA 2003 (Python's `idna` codec) would say `strasse.de`, another domain whose
    `_smtp._tls` record would then receive this domain's report."""
    policy = PolicyRef(PolicyType.STS, "straße.de", ("mode: enforce",), ("mx.straße.de",))
    failure = FailureDetail(ResultType.CERTIFICATE_EXPIRED, receiving_mx_hostname="mx.straße.de")
    ts = datetime(2026, 11, 21, 12, tzinfo=UTC).timestamp()
    with TlsRptStore(tmp_path / "r.db") as store:
        store.submit(SessionEvent(ts, "Straße.de.", policy, False, (failure,)))
        store.flush()
        (doc,) = [build_report(dd, SETTINGS) for dd in store.domain_days(DAY)]
    a_label = "xn--strae-oqa.de"
    report = json.loads(doc.json_bytes)["policies"][0]
    assert doc.report_domain == a_label
    assert report["policy"]["policy-domain"] == a_label
    assert report["policy"]["mx-host"] == [f"mx.{a_label}"]
    assert report["failure-details"][0]["receiving-mx-hostname"] == f"mx.{a_label}"
    assert doc.filename.startswith(f"sender.example!{a_label}!")
    assert doc.subject.startswith(f"Report Domain: {a_label} Submitter: sender.example ")
    mail = email.message_from_bytes(
        build_message(
            doc,
            from_addr="noreply@sender.example",
            to_addr=f"tlsrpt@{a_label}",
            date=datetime(2026, 11, 22, tzinfo=UTC),
            message_id="<idn.1@sender.example>",
        ),
        policy=email.policy.default,
    )
    assert mail["Subject"] == doc.subject and mail["TLS-Report-Domain"] == a_label
    (attachment,) = [p for p in mail.walk() if p.get_filename()]
    assert attachment.get_filename() == doc.filename
    assert "strasse" not in doc.json_bytes.decode() + doc.filename + doc.subject


def test_date_range_covers_one_utc_day_and_filename_matches() -> None:
    """RFC 8460 §4.1, §4.4, §5.1, §5.6: 00:00:00Z..23:59:59Z; filename uses the same instants."""
    doc = build_report(
        DomainDay(DAY, "example.com", None, (PolicyAggregate(STS, 1, 0, ()),)), SETTINGS
    )
    rep = json.loads(doc.json_bytes)
    assert rep["date-range"] == {
        "start-datetime": "2026-11-21T00:00:00Z",
        "end-datetime": "2026-11-21T23:59:59Z",
    }
    m = re.fullmatch(r"([^!]+)!([^!]+)!(\d+)!(\d+)!([A-Za-z0-9]+)\.json\.gz", doc.filename)
    assert m is not None
    assert m.group(1) == "sender.example" and m.group(2) == "example.com"
    assert datetime.fromtimestamp(int(m.group(3)), UTC) == datetime(2026, 11, 21, tzinfo=UTC)
    assert datetime.fromtimestamp(int(m.group(4)), UTC) == datetime(
        2026, 11, 21, 23, 59, 59, tzinfo=UTC
    )
    assert doc.gzip_bytes()[:2] == b"\x1f\x8b"  # RFC 8460 §5.2
    assert gzip.decompress(doc.gzip_bytes()) == doc.json_bytes


def test_subject_report_id_is_a_valid_msg_id_and_equals_json() -> None:
    """RFC 8460 §5.3, §5.6: Subject Report-ID is <dot-atom@dot-atom> and the JSON's report-id."""
    doc = build_report(
        DomainDay(DAY, "example.com", None, (PolicyAggregate(STS, 1, 0, ()),)), SETTINGS
    )
    m = re.fullmatch(r"Report Domain: (\S+) Submitter: (\S+) Report-ID: <([^<>]+)>", doc.subject)
    assert m is not None
    atext = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
    dot_atom = rf"{atext}(?:\.{atext})*"
    assert re.fullmatch(rf"{dot_atom}@{dot_atom}", m.group(3))
    assert m.group(3) == json.loads(doc.json_bytes)["report-id"]
    assert m.group(1) == "example.com" and m.group(2) == "sender.example"


def test_report_id_stable_across_rebuilds_and_distinct_per_record() -> None:
    """RFC 8460 §4.4: same inputs → same id (retry after restart); another record → another id."""
    agg = (PolicyAggregate(STS, 1, 0, ()),)
    a = build_report(
        DomainDay(DAY, "example.com", "v=TLSRPTv1;rua=mailto:a@x.example", agg), SETTINGS
    )
    b = build_report(
        DomainDay(DAY, "example.com", "v=TLSRPTv1;rua=mailto:a@x.example", agg), SETTINGS
    )
    c = build_report(
        DomainDay(DAY, "example.com", "v=TLSRPTv1;rua=mailto:b@x.example", agg), SETTINGS
    )
    assert a.report_id == b.report_id and a.gzip_bytes() == b.gzip_bytes()
    assert a.report_id != c.report_id and a.filename != c.filename


def test_counts_are_json_integers_and_reason_code_is_filled() -> None:
    """RFC 8460 §4.2, §4.3, §4.4: integers; validation-failure gets a reason; free-text info is no
    URI."""
    detail = FailureDetail(ResultType.VALIDATION_FAILURE, additional_information="not a uri")
    doc = build_report(
        DomainDay(DAY, "example.com", None, (PolicyAggregate(STS, 7, 2, ((detail, 2),)),)), SETTINGS
    )
    rep = json.loads(doc.json_bytes)
    assert rep["policies"][0]["summary"] == {
        "total-successful-session-count": 7,
        "total-failure-session-count": 2,
    }
    fd = rep["policies"][0]["failure-details"][0]
    assert fd == {
        "result-type": "validation-failure",
        "failed-session-count": 2,
        "failure-reason-code": "not a uri",
    }
    validate_report(rep)


def test_free_text_is_bounded_single_line() -> None:
    """RFC 8460 §7: no multi-line or unbounded text from the MTA reaches the report."""
    detail = FailureDetail(
        ResultType.CERTIFICATE_NOT_TRUSTED,
        receiving_mx_helo="mx.x\r\n250-X",
        failure_reason_code="x" * 5000 + "\nsecret",
    )
    doc = build_report(
        DomainDay(DAY, "example.com", None, (PolicyAggregate(STS, 0, 1, ((detail, 1),)),)), SETTINGS
    )
    fd = json.loads(doc.json_bytes)["policies"][0]["failure-details"][0]
    assert fd["receiving-mx-helo"] == "mx.x"
    assert len(fd["failure-reason-code"]) == 255 and "\n" not in fd["failure-reason-code"]


def test_size_bound_drops_lowest_count_details_and_keeps_summaries() -> None:
    """Documented rule: over max_report_bytes, details go lowest count first; totals stay."""
    details = tuple(
        (
            FailureDetail(
                ResultType.CERTIFICATE_EXPIRED,
                receiving_mx_hostname=f"mx{i}.example.com",
                failure_reason_code="expired",
            ),
            i + 1,
        )
        for i in range(400)
    )
    small = ReportSettings("Org", "r@sender.example", max_report_bytes=20_000)
    dd = DomainDay(DAY, "example.com", None, (PolicyAggregate(STS, 5, 80_200, details),))
    doc = build_report(dd, small)
    assert len(doc.json_bytes) <= 20_000
    assert doc.dropped_details > 0
    rep = json.loads(doc.json_bytes)
    kept = [fd["failed-session-count"] for fd in rep["policies"][0]["failure-details"]]
    assert len(kept) == 400 - doc.dropped_details
    assert min(kept) > 400 - len(kept)  # exactly the highest counts survive
    assert rep["policies"][0]["summary"]["total-failure-session-count"] == 80_200
    assert str(doc.dropped_details) in doc.text_body()
    validate_report(rep)
    # Just under the limit nothing is dropped.
    whole = build_report(dd, ReportSettings("Org", "r@sender.example", max_report_bytes=10**7))
    assert whole.dropped_details == 0 and len(whole.policies[0].details) == 400


def test_settings_reject_bad_contact_and_mismatched_submitter() -> None:
    """RFC 8460 §4.4, §5.3."""
    with pytest.raises(ValueError):
        ReportSettings("Org", "not-an-address")
    with pytest.raises(ValueError):
        ReportSettings("Org", "r@sender.example", submitter="other.example")
    assert (
        ReportSettings("Org", "r@Sender.Example.", submitter="sender.example").submitter_domain
        == "sender.example"
    )


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_detail = st.builds(
    FailureDetail,
    st.sampled_from(list(ResultType)),
    st.one_of(st.none(), st.ip_addresses().map(str), _text),
    st.one_of(st.none(), _text),
    st.one_of(st.none(), _text),
    st.one_of(st.none(), st.ip_addresses().map(str), _text),
    st.one_of(st.none(), _text),
    st.one_of(st.none(), _text),
)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=2, max_size=4).map(".".join)


@settings(max_examples=150, deadline=None)
@given(
    domain=_domain,
    ptype=st.sampled_from(list(PolicyType)),
    strings=st.lists(_text, max_size=4),
    details=st.lists(st.tuples(_detail, st.integers(1, 10**6)), max_size=6),
    ok=st.integers(0, 10**9),
    bad=st.integers(0, 10**9),
)
def test_property_any_aggregate_renders_schema_valid_json(
    domain: str,
    ptype: PolicyType,
    strings: list[str],
    details: list[tuple[FailureDetail, int]],
    ok: int,
    bad: int,
) -> None:
    policy = PolicyRef(ptype, domain, tuple(strings), (f"mx.{domain}",))
    doc = build_report(
        DomainDay(DAY, domain, None, (PolicyAggregate(policy, ok, bad, tuple(details)),)), SETTINGS
    )
    validate_report(doc.json_bytes)
    assert sum(
        fd["failed-session-count"]
        for p in json.loads(doc.json_bytes)["policies"]
        for fd in p.get("failure-details", ())
    ) == sum(c for _, c in details)
