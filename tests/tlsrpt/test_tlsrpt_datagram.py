"""libtlsrpt datagram parser (docs/conformance.md: DG-envelope, DG-policy, DG-failure-detail):
sample replay, tolerated quirks, rejected input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.errors import DatagramError, ResultType
from mta_sts_policyd.tlsrpt.libtlsrpt.datagram import (
    MAX_TEXT,
    Anomaly,
    parse_datagram,
    parse_datagram_full,
)
from mta_sts_policyd.tlsrpt.model import FailureDetail, PolicyRef, PolicyType, SessionEvent
from support import TESTS_DIR

FIXTURES = TESTS_DIR / "fixtures" / "datagrams"
AT = 1_790_000_000.5
STS_RECORD = (
    "v=TLSRPTv1;rua=mailto:tlsrpt@company-y.example,https://reports.company-y.example/tlsrpt"
)
STS_POLICY = PolicyRef(
    PolicyType.STS,
    "company-y.example",
    ("version: STSv1", "mode: enforce", "mx: *.mail.company-y.example", "max_age: 86400"),
    ("*.mail.company-y.example",),
)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def dgram(**policy: Any) -> dict[str, Any]:
    """A valid one-policy datagram (compact, like the hand-made fixture) to be modified."""
    base: dict[str, Any] = {"policy-type": 2, "policy-domain": "a.example", "t": 0, "f": 0}
    base.update(policy)
    return {
        "dpv": "1",
        "d": "a.example",
        "pr": "v=TLSRPTv1;rua=mailto:r@a.example",
        "policies": [base],
    }


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


def one(obj: object) -> SessionEvent:
    events = parse_datagram(enc(obj), AT)
    assert len(events) == 1
    return events[0]


def detail(**fields: Any) -> FailureDetail:
    event = one(dgram(**{"failure-details": [{"c": 205, **fields}], "t": 1, "f": 1}))
    return event.failures[0]


# -- fixture datagrams, replayed byte-exact ---------------------------------------------


def test_sample_sts_success() -> None:
    assert parse_datagram(fixture("libtlsrpt-sts-success.json"), AT) == [
        SessionEvent(AT, "company-y.example", STS_POLICY, True, (), STS_RECORD)
    ]


def test_sample_sts_two_failures_with_escapes() -> None:
    expected = SessionEvent(
        AT,
        "company-y.example",
        STS_POLICY,
        False,
        (
            FailureDetail(
                ResultType.CERTIFICATE_EXPIRED,
                sending_mta_ip="192.0.2.10",
                receiving_mx_hostname="mx1.mail.company-y.example",
                receiving_mx_helo="mx1.mail.company-y.example",
                receiving_ip="198.51.100.1",
                failure_reason_code="certificate has expired",
            ),
            FailureDetail(
                ResultType.STARTTLS_NOT_SUPPORTED,
                sending_mta_ip="192.0.2.10",
                receiving_mx_hostname="mx2.mail.company-y.example",
                receiving_ip="198.51.100.2",
                additional_information='quote" back\\slash tab\t nl\n',
                failure_reason_code=None,  # "f": "" on the wire: empty means absent
            ),
        ),
        STS_RECORD,
    )
    assert parse_datagram(fixture("libtlsrpt-sts-two-failures.json"), AT) == [expected]


def test_sample_no_policy_found_gets_policy_domain_from_d() -> None:
    # `d` is "Other.Example." on the wire: lower-cased, one trailing dot stripped (DG-envelope).
    assert parse_datagram(fixture("libtlsrpt-no-policy-found.json"), AT) == [
        SessionEvent(
            AT,
            "other.example",
            PolicyRef(PolicyType.NO_POLICY_FOUND, "other.example"),
            True,
            (),
            "v=TLSRPTv1; rua=mailto:tls@other.example",
        )
    ]


def test_sample_hand_made_tlsa() -> None:
    tlsa = "3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6"
    assert parse_datagram(fixture("hand-tlsa-dnssec-invalid.json"), AT) == [
        SessionEvent(
            AT,
            "hand.example",
            PolicyRef(PolicyType.TLSA, "hand.example", (tlsa,)),
            False,
            (
                FailureDetail(
                    ResultType.DNSSEC_INVALID,
                    sending_mta_ip="192.0.2.10",
                    receiving_mx_hostname="mx.hand.example",
                    receiving_ip="203.0.113.5",
                    additional_information="DNSSEC bogus",
                ),
            ),
            "v=TLSRPTv1;rua=mailto:tlsrpt@hand.example",
        )
    ]


def test_samples_have_no_anomalies() -> None:
    for path in FIXTURES.glob("*.json"):
        assert parse_datagram_full(path.read_bytes(), AT).anomalies == (), path.name


# -- tolerated deviations (counted, not fatal) -------------------------------------------------


@pytest.mark.parametrize("dpv", [None, "2", 1])
def test_missing_or_other_dpv_is_processed_and_counted(dpv: object) -> None:
    obj = dgram()
    if dpv is None:
        del obj["dpv"]
    else:
        obj["dpv"] = dpv
    parsed = parse_datagram_full(enc(obj), AT)
    assert len(parsed.events) == 1
    assert parsed.anomalies == (Anomaly.DPV,)


def test_t_mismatch_is_tolerated() -> None:
    parsed = parse_datagram_full(enc(dgram(t=5)), AT)
    assert parsed.events[0].success
    assert parsed.anomalies == (Anomaly.T_MISMATCH,)


@pytest.mark.parametrize(("details", "success"), [([], True), ([{"c": 204}], False)])
def test_missing_f_is_inferred_from_failure_details(details: list[Any], success: bool) -> None:
    obj = dgram(**{"failure-details": details, "t": len(details)})
    del obj["policies"][0]["f"]
    parsed = parse_datagram_full(enc(obj), AT)
    assert parsed.events[0].success is success
    assert Anomaly.F_MISSING in parsed.anomalies


@pytest.mark.parametrize("code", [206, 207, 299, 400, 901, 0, -1])
def test_unknown_failure_code_becomes_validation_failure_with_reason(code: int) -> None:
    obj = dgram(**{"failure-details": [{"c": code, "f": "boom"}], "t": 1, "f": 1})
    parsed = parse_datagram_full(enc(obj), AT)
    (failure,) = parsed.events[0].failures
    assert failure.result_type is ResultType.VALIDATION_FAILURE
    assert failure.failure_reason_code == f"libtlsrpt-code-{code}: boom"
    assert Anomaly.UNKNOWN_CODE in parsed.anomalies


@pytest.mark.parametrize(
    ("code", "result"),
    [
        (201, ResultType.STARTTLS_NOT_SUPPORTED),
        (202, ResultType.CERTIFICATE_HOST_MISMATCH),
        (203, ResultType.CERTIFICATE_NOT_TRUSTED),
        (204, ResultType.CERTIFICATE_EXPIRED),
        (205, ResultType.VALIDATION_FAILURE),
        (301, ResultType.STS_POLICY_FETCH_ERROR),
        (302, ResultType.STS_POLICY_INVALID),
        (303, ResultType.STS_WEBPKI_INVALID),
        (304, ResultType.TLSA_INVALID),
        (305, ResultType.DNSSEC_INVALID),
        (306, ResultType.DANE_REQUIRED),
    ],
)
def test_failure_codes_map_to_result_types(code: int, result: ResultType) -> None:
    assert detail(c=code).result_type is result


@pytest.mark.parametrize(
    ("wire", "kind"), [(1, PolicyType.TLSA), (2, PolicyType.STS), (9, PolicyType.NO_POLICY_FOUND)]
)
def test_policy_types(wire: int, kind: PolicyType) -> None:
    assert one(dgram(**{"policy-type": wire})).policy.policy_type is kind


@pytest.mark.parametrize("domain", [None, ""])
def test_missing_or_empty_policy_domain_uses_d(domain: str | None) -> None:
    obj = dgram(**{"policy-type": 9})
    obj["d"] = "Report.Example."
    if domain is None:
        del obj["policies"][0]["policy-domain"]
    else:
        obj["policies"][0]["policy-domain"] = domain
    assert one(obj).policy.policy_domain == "report.example"


def test_names_become_lower_case_a_labels() -> None:
    obj = dgram(**{"policy-domain": "BÜCHER.example.", "mx-host": ["*.MX.Bücher.Example."]})
    obj["d"] = "bücher.EXAMPLE"
    event = one(obj)
    assert event.report_domain == "xn--bcher-kva.example"
    assert event.policy.policy_domain == "xn--bcher-kva.example"
    assert event.policy.mx_hosts == ("*.mx.xn--bcher-kva.example",)


def test_several_policies_give_one_event_each() -> None:
    obj = dgram()
    obj["policies"].append(
        {
            "policy-type": 1,
            "policy-domain": "mx.b.example",
            "t": 1,
            "f": 1,
            "failure-details": [{"c": 304}],
        }
    )
    events = parse_datagram(enc(obj), AT)
    assert [e.policy.policy_type for e in events] == [PolicyType.STS, PolicyType.TLSA]
    assert [e.success for e in events] == [True, False]
    assert {e.report_domain for e in events} == {"a.example"}


def test_missing_pr_leaves_record_to_the_reporter() -> None:
    obj = dgram()
    del obj["pr"]
    assert one(obj).tlsrpt_record is None


# -- normalisation of failure-detail fields (docs/conformance.md: DG-failure-detail,
# RPT-aggregate-key, RPT-4.4-fields, RPT-7-bounded-text) ---


@pytest.mark.parametrize(
    ("helo", "expected"),
    [
        ("mx1.example.net", "mx1.example.net"),
        ("MX1.Example.NET.", "mx1.example.net"),
        (
            "250-mx1.example.net Hello client [192.0.2.1]\r\n250-PIPELINING\r\n250 STARTTLS",
            "mx1.example.net",
        ),
        ("mx1.example.net ESMTP ready\r\nSIZE 1000", "mx1.example.net"),
        ("  \r\n250 x", None),
        ("", None),
        ("not/a host name", "not/a"),
    ],
)
def test_helo_is_first_line_hostname_only(helo: str, expected: str | None) -> None:
    assert detail(h=helo).receiving_mx_helo == expected


def test_helo_is_bounded() -> None:
    value = detail(h="x" * 10_000 + " tail").receiving_mx_helo
    assert value is not None
    assert len(value) == MAX_TEXT


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("192.0.2.10", "192.0.2.10"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("IPv6:2001:db8::1", "2001:db8::1"),
        ("::FFFF:192.0.2.1", "::ffff:192.0.2.1"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_ips_are_rfc5952(ip: str, expected: str) -> None:
    failure = detail(s=ip, r=ip)
    assert failure.sending_mta_ip == expected
    assert failure.receiving_ip == expected


def test_invalid_ip_is_dropped_and_counted() -> None:
    obj = dgram(**{"failure-details": [{"c": 205, "r": "999.1.1.1", "s": "x"}], "t": 1, "f": 1})
    parsed = parse_datagram_full(enc(obj), AT)
    assert parsed.events[0].failures[0].receiving_ip is None
    assert parsed.events[0].failures[0].sending_mta_ip is None
    assert parsed.anomalies.count(Anomaly.BAD_IP) == 2


def test_free_text_is_bounded() -> None:
    obj = dgram(
        **{"failure-details": [{"c": 203, "a": "a" * 100_000, "f": "é" * 5000}], "t": 1, "f": 1}
    )
    parsed = parse_datagram_full(enc(obj), AT)
    failure = parsed.events[0].failures[0]
    assert failure.additional_information == "a" * MAX_TEXT
    assert failure.failure_reason_code == "é" * MAX_TEXT
    assert parsed.anomalies.count(Anomaly.TRUNCATED) == 2


def test_empty_optional_strings_mean_absent() -> None:
    assert detail(s="", n="", h="", r="", a="", f="") == FailureDetail(
        ResultType.VALIDATION_FAILURE
    )


def test_receiving_mx_hostname_is_normalised_or_kept_as_text() -> None:
    assert detail(n="MX.Example.").receiving_mx_hostname == "mx.example"
    assert detail(n="bad host!").receiving_mx_hostname == "bad host!"


# -- rejected datagrams (the collector quarantines them) ----------------------------------------


def reason(data: bytes) -> str:
    with pytest.raises(DatagramError) as info:
        parse_datagram(data, AT)
    return info.value.reason


def test_unknown_policy_type_is_rejected_not_a_crash() -> None:
    assert "policy-type" in reason(enc(dgram(**{"policy-type": 3})))


@pytest.mark.parametrize(
    "data",
    [
        fixture("libtlsrpt-sts-success.json")[:-20],  # truncated JSON (DG-encoding)
        b"",
        b"\xff\xfe{}",
        b'{"dpv": "1", "d": "a.example\xc3\x28"}',  # invalid UTF-8 (DG-encoding)
        json.dumps(dgram()).encode("utf-16"),
        b"[" * 100_000 + b"]" * 100_000,  # nesting beyond the recursion limit
        b'{"c": ' + b"9" * 5000 + b"}",  # integer beyond int_max_str_digits
        b"NaN",
    ],
)
def test_undecodable_datagrams_raise_datagram_error(data: bytes) -> None:
    assert reason(data)


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        ([], "not a JSON object"),
        ({"dpv": "1", "d": "a.example", "pr": "v=TLSRPTv1;"}, "policies"),
        ({**dgram(), "policies": []}, "policies"),
        ({**dgram(), "policies": {}}, "policies"),
        ({**dgram(), "policies": [1]}, "policies[0]"),
        ({**dgram(), "d": ""}, "d"),
        ({**dgram(), "d": 7}, "d"),
        ({**dgram(), "d": "bad domain.example"}, "d"),
        ({**dgram(), "d": "a" * 64 + ".example"}, "d"),
        ({**dgram(), "pr": ["v=TLSRPTv1;"]}, "pr"),
        ({**dgram(), "pr": "v" * 5000}, "pr"),
        (dgram(**{"policy-type": "2"}), "policy-type"),
        (dgram(**{"policy-type": True}), "policy-type"),
        (dgram(**{"policy-type": 2.0}), "policy-type"),
        (dgram(**{"policy-type": None}), "policy-type"),
        (dgram(f="1"), ".f"),
        (dgram(f=2), ".f"),
        (dgram(t="0"), ".t"),
        (dgram(**{"policy-domain": 5}), "policy-domain"),
        (dgram(**{"policy-string": "version: STSv1"}), "policy-string"),
        (dgram(**{"policy-string": [1]}), "policy-string"),
        (dgram(**{"policy-string": ["x" * 9000]}), "policy-string"),
        (dgram(**{"policy-string": ["x"] * 65}), "policy-string"),
        (dgram(**{"mx-host": ["mx one.example"]}), "mx-host"),
        (dgram(**{"failure-details": [{"c": "204"}]}), ".c"),
        (dgram(**{"failure-details": [{"f": "no code"}]}), ".c"),
        (dgram(**{"failure-details": [{"c": 204, "s": 192}]}), ".s"),
        (dgram(**{"failure-details": ["204"]}), "failure-details[0]"),
        (dgram(**{"failure-details": {"c": 204}}), "failure-details"),
    ],
)
def test_wrong_types_and_bounds_raise_with_the_path(obj: object, where: str) -> None:
    assert where in reason(enc(obj))


def test_lone_surrogate_escape_is_rejected() -> None:
    data = enc(dgram(**{"failure-details": [{"c": 205, "a": "x"}], "t": 1, "f": 1}))
    assert "surrogate" in reason(data.replace(b'"a": "x"', b'"a": "\\ud800"'))


def test_received_at_is_the_callers_timestamp() -> None:
    assert [e.timestamp for e in parse_datagram(enc(dgram()), 42.25)] == [42.25]


# -- property tests ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "dpv",
    "d",
    "pr",
    "policies",
    "policy-type",
    "policy-domain",
    "policy-string",
    "mx-host",
    "failure-details",
    "t",
    "f",
    "c",
    "s",
    "n",
    "h",
    "r",
    "a",
]


def check_outcome(data: bytes) -> None:
    try:
        events = parse_datagram(data, AT)
    except DatagramError as exc:
        assert exc.reason
        return
    assert events
    for event in events:
        assert event.report_domain == event.report_domain.lower()
        assert event.policy.policy_domain
        for failure in event.failures:
            assert isinstance(failure.result_type, ResultType)  # never without result-type
            for text in (failure.additional_information, failure.failure_reason_code):
                assert text is None or 0 < len(text) <= MAX_TEXT


@given(st.binary(max_size=2048))
@settings(max_examples=300)
def test_arbitrary_bytes_only_raise_datagram_error(data: bytes) -> None:
    check_outcome(data)


@given(JSON)
@settings(max_examples=300)
def test_arbitrary_json_only_raises_datagram_error(obj: object) -> None:
    check_outcome(json.dumps(obj).encode())


@given(st.sampled_from(FIELDS), JSON, st.booleans())
@settings(max_examples=500)
def test_mutated_valid_datagram_only_raises_datagram_error(
    key: str, value: object, top: bool
) -> None:
    obj = dgram(**{"failure-details": [{"c": 204, "s": "192.0.2.1", "h": "mx"}], "t": 1, "f": 1})
    failure = obj["policies"][0]["failure-details"][0]
    (obj if top else obj["policies"][0])[key] = value
    failure[key] = value
    check_outcome(json.dumps(obj).encode())
