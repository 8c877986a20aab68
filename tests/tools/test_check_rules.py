"""The pure finding rules: every catalogued code is produced by one observation and absent
from a near miss (plus the clean baseline, which produces none)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.probe.result import ProbeResult
from mta_sts_policyd.sts import Mode, parse_policy
from mta_sts_policyd.sts.model import TxtAbsent, TxtInvalid, TxtRecord
from mta_sts_policyd.tools.check.findings import CATALOGUE, NagiosStatus, Severity
from mta_sts_policyd.tools.check.judge import DomainReport, judge_domain
from mta_sts_policyd.tools.check.observations import (
    CertSeen,
    DomainSeen,
    EndpointProblem,
    MxAddressSeen,
    MxHostSeen,
    MxSeen,
    Options,
    PolicyAddressSeen,
    PolicyHostSeen,
    TlsRptSeen,
    TxtSeen,
)
from mta_sts_policyd.tools.policy_id import policy_id

NOW = datetime(2026, 6, 1, tzinfo=UTC)
D, HOST, MX1, MX2 = "example.test", "mta-sts.example.test", "mx1.example.test", "mx2.example.test"
BODY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmax_age: 604800\r\n"
ID = policy_id(parse_policy(BODY))


def _cert(names: tuple[str, ...] = (HOST,), days: float = 90, **kw: object) -> CertSeen:
    return CertSeen(names, NOW + timedelta(days=days), **kw)  # type: ignore[arg-type]


def _address(address: str = "192.0.2.1", body: bytes = BODY, **kw: object) -> PolicyAddressSeen:
    fields: dict[str, object] = dict(cert=_cert(), tls_version="TLSv1.3", status=200,
                                     headers={"content-type": "text/plain"}, body=body)  # fmt: skip
    fields.update(kw)
    return PolicyAddressSeen(address, **fields)  # type: ignore[arg-type]


def _probe(host: str = MX1, address: str = "192.0.2.10", **kw: object) -> ProbeResult:
    fields: dict[str, object] = dict(mx_host=host, address=address, ok=True, result_type=None,
        reason="ok", failure_reason_code=None, tls_version="TLSv1.3",
        cert_not_after=NOW + timedelta(days=90), cert_names=(host,), receiving_helo=host,
        checked_at=0.0)  # fmt: skip
    fields.update(kw)
    return ProbeResult(**fields)  # type: ignore[arg-type]


def _mx_host(host: str = MX1, **probe: object) -> MxHostSeen:
    return MxHostSeen(host, (MxAddressSeen("192.0.2.10", probe=_probe(host, **probe)),))


def good() -> DomainSeen:
    return DomainSeen(
        domain=D,
        txt=TxtSeen(f"_mta-sts.{D}", TxtRecord(ID), (f"v=STSv1; id={ID}",), ttl=300),
        policy_host=PolicyHostSeen(HOST, addresses=(_address(),)),
        mx=MxSeen(hosts=(MX1,)),
        mx_hosts=(_mx_host(),),
        tlsrpt=TlsRptSeen(
            f"_smtp._tls.{D}",
            ("v=TLSRPTv1; rua=mailto:tls@example.test",),
            mailto_domains={"example.test": None},
        ),
    )


def with_body(body: bytes, txt_id: str | None = None, **kw: object) -> DomainSeen:
    seen = good()
    record_id = txt_id or policy_id(parse_policy(body))
    txt = replace(seen.txt, result=TxtRecord(record_id), records=(f"v=STSv1; id={record_id}",))
    host = replace(seen.policy_host, addresses=(_address(body=body, **kw),))  # type: ignore[arg-type]
    return replace(seen, txt=txt, policy_host=host)


def with_txt(*records: str, result: object, **kw: object) -> DomainSeen:
    seen = good()
    return replace(seen, txt=replace(seen.txt, records=records, result=result, **kw))  # type: ignore[arg-type]


def with_address(**kw: object) -> DomainSeen:
    seen = good()
    return replace(seen, policy_host=replace(seen.policy_host, addresses=(_address(**kw),)))  # type: ignore[arg-type]


def with_mx(hosts: tuple[str, ...], **kw: object) -> DomainSeen:
    seen = good()
    return replace(seen, mx=MxSeen(hosts=hosts, **kw),  # type: ignore[arg-type]
                   mx_hosts=tuple(_mx_host(h) for h in hosts))  # fmt: skip


def with_probe(**kw: object) -> DomainSeen:
    return replace(good(), mx_hosts=(_mx_host(**kw),))


def with_mx_host(**kw: object) -> DomainSeen:
    return replace(good(), mx_hosts=(replace(_mx_host(), **kw),))


def with_tlsrpt(*records: str, **kw: object) -> DomainSeen:
    seen = good()
    return replace(seen, tlsrpt=replace(seen.tlsrpt, records=records, **kw))  # type: ignore[arg-type]


DUP = BODY + b"mode: testing\r\n"
TESTING = BODY.replace(b"enforce", b"testing")
Case = tuple[Callable[[], DomainSeen], Callable[[], DomainSeen], Options]
DEFAULTS = Options()

CASES: dict[str, Case] = {
    "DNS_LOOKUP_FAILED": (lambda: with_txt(result=None, error="SERVFAIL"), good, DEFAULTS),
    "TXT_MISSING": (lambda: with_txt(result=TxtAbsent()), good, DEFAULTS),
    "TXT_MULTIPLE": (
        lambda: with_txt("v=STSv1; id=1", "v=STSv1; id=2", result=TxtInvalid("2 records")),
        good,
        DEFAULTS,
    ),
    "TXT_INVALID": (
        lambda: with_txt("v=STSv1; id=a-b", result=TxtInvalid("bad id")),
        good,
        DEFAULTS,
    ),
    "TXT_EXTRA_RECORDS": (
        lambda: with_txt(f"v=STSv1; id={ID}", "spf-ish", result=TxtRecord(ID)),
        good,
        DEFAULTS,
    ),
    "TXT_EXTENSION": (
        lambda: with_txt(f"v=STSv1; id={ID}; x=1", result=TxtRecord(ID, (("x", "1"),))),
        good,
        DEFAULTS,
    ),
    "TXT_CNAME": (
        lambda: with_txt(
            f"v=STSv1; id={ID}",
            result=TxtRecord(ID),
            chain=((f"_mta-sts.{D}", "sts.host.example"),),
        ),
        good,
        DEFAULTS,
    ),
    "TXT_TTL_HIGH": (
        lambda: with_txt(f"v=STSv1; id={ID}", result=TxtRecord(ID), ttl=86401),
        lambda: with_txt(f"v=STSv1; id={ID}", result=TxtRecord(ID), ttl=86400),
        DEFAULTS,
    ),
    "ID_UNEXPECTED": (good, good, Options(expect_id="other")),
    "HOSTING_CNAME_MISSING": (
        good,
        lambda: replace(good(), cname_targets=("sts.provider.example",)),
        Options(expect_cname=("sts.provider.example",)),
    ),
    "ADDRESS_NOT_PUBLIC": (lambda: with_address(not_public=True, status=None), good, DEFAULTS),
    "POLICY_HOST_NO_ADDRESS": (
        lambda: replace(good(), policy_host=PolicyHostSeen(HOST)),
        good,
        DEFAULTS,
    ),
    "POLICY_CONNECT_FAILED": (
        lambda: with_address(connect_error="refused", status=None),
        good,
        DEFAULTS,
    ),
    "POLICY_TLS_FAILED": (
        lambda: with_address(tls_error="alert", cert=None, status=None),
        good,
        DEFAULTS,
    ),
    "POLICY_CERT_UNTRUSTED": (
        lambda: with_address(
            cert=_cert(verify_error=ResultType.CERTIFICATE_NOT_TRUSTED), status=None
        ),
        good,
        DEFAULTS,
    ),
    "POLICY_CERT_NAME_MISMATCH": (
        lambda: with_address(cert=_cert(("example.test",)), status=None),
        good,
        DEFAULTS,
    ),
    "POLICY_CERT_EXPIRED": (lambda: with_address(cert=_cert(days=-1), status=None), good, DEFAULTS),
    "POLICY_CERT_EXPIRES": (
        lambda: with_address(cert=_cert(days=21.5)),
        lambda: with_address(cert=_cert(days=22.5)),
        DEFAULTS,
    ),
    "POLICY_REDIRECT": (
        lambda: with_address(status=301, headers={"location": "https://x/"}),
        good,
        DEFAULTS,
    ),
    "POLICY_HTTP_STATUS": (lambda: with_address(status=404), good, DEFAULTS),
    "POLICY_CONTENT_TYPE": (
        lambda: with_address(headers={"content-type": "text/html"}),
        lambda: with_address(headers={"content-type": "text/plain; charset=utf-8"}),
        DEFAULTS,
    ),
    "POLICY_TOO_LARGE": (lambda: with_address(oversize=True), good, DEFAULTS),
    "POLICY_FETCH_FAILED": (
        lambda: with_address(status=None, fetch_error="timed out"),
        good,
        DEFAULTS,
    ),
    "POLICY_SYNTAX": (lambda: with_address(body=b"version: STSv1\nmode: on\n"), good, DEFAULTS),
    "POLICY_BOM": (lambda: with_body(b"\xef\xbb\xbf" + BODY), good, DEFAULTS),
    "POLICY_MIXED_LINE_ENDINGS": (
        lambda: with_body(BODY + b"x-a: 1\n"),
        lambda: with_body(BODY.replace(b"\r\n", b"\n")),
        DEFAULTS,
    ),
    "POLICY_DUPLICATE_KEY": (
        lambda: with_body(DUP),
        lambda: with_body(BODY + b"mx: mx1.example.test\r\n"),
        DEFAULTS,
    ),
    "POLICY_UNKNOWN_KEY": (lambda: with_body(BODY + b"x-note: hi\r\n"), good, DEFAULTS),
    "POLICY_MAX_AGE_RANGE": (
        lambda: with_body(BODY.replace(b"604800", b"31557601")),
        lambda: with_body(BODY.replace(b"604800", b"31557600")),
        DEFAULTS,
    ),
    "POLICY_MAX_AGE_SHORT": (
        lambda: with_body(BODY.replace(b"604800", b"86399")),
        lambda: with_body(TESTING.replace(b"604800", b"86399")),
        DEFAULTS,
    ),
    "POLICY_ADDRESSES_DIFFER": (
        lambda: replace(
            good(),
            policy_host=PolicyHostSeen(
                HOST,
                addresses=(_address(), _address("192.0.2.2", body=BODY.replace(b"\r\n", b"\n"))),
            ),
        ),
        lambda: replace(
            good(), policy_host=PolicyHostSeen(HOST, addresses=(_address(), _address("192.0.2.2")))
        ),
        DEFAULTS,
    ),
    "POLICY_MODE_TESTING": (lambda: with_body(TESTING), good, DEFAULTS),
    "POLICY_MODE_NONE": (
        lambda: with_body(b"version: STSv1\nmode: none\nmax_age: 86400\n"),
        good,
        DEFAULTS,
    ),
    "ID_NOT_BUMPED": (lambda: with_body(TESTING, txt_id=ID), good, DEFAULTS),
    "ID_NOT_VERIFIABLE": (lambda: with_body(BODY, txt_id="20260601"), good, DEFAULTS),
    "DOMAIN_NXDOMAIN": (lambda: replace(good(), mx=MxSeen(nxdomain=True)), good, DEFAULTS),
    "MX_NULL": (lambda: replace(good(), mx=MxSeen(null=True), mx_hosts=()), good, DEFAULTS),
    "MX_IMPLICIT": (lambda: with_mx((D,), implicit=True), good, DEFAULTS),
    "MX_NOT_COVERED": (
        lambda: with_mx((MX1, "mx.other.example")),
        lambda: with_body(BODY.replace(b"mx1.", b"*.")),
        DEFAULTS,
    ),
    "MX_PATTERN_UNUSED": (lambda: with_body(BODY + b"mx: old.example.test\r\n"), good, DEFAULTS),
    "MX_NO_ADDRESS": (lambda: replace(good(), mx_hosts=(MxHostSeen(MX1),)), good, DEFAULTS),
    "MX_CONNECT_FAILED": (lambda: with_probe(ok=False, reason="timeout"), good, DEFAULTS),
    "MX_STARTTLS_MISSING": (
        lambda: with_probe(ok=False, result_type=ResultType.STARTTLS_NOT_SUPPORTED),
        good,
        DEFAULTS,
    ),
    "MX_CERT_UNTRUSTED": (
        lambda: with_probe(ok=False, result_type=ResultType.CERTIFICATE_NOT_TRUSTED),
        good,
        DEFAULTS,
    ),
    "MX_CERT_NAME_MISMATCH": (
        lambda: with_probe(ok=False, result_type=ResultType.CERTIFICATE_HOST_MISMATCH),
        good,
        DEFAULTS,
    ),
    "MX_CERT_EXPIRED": (
        lambda: with_probe(ok=False, result_type=ResultType.CERTIFICATE_EXPIRED),
        good,
        DEFAULTS,
    ),
    "MX_CERT_EXPIRES": (
        lambda: with_probe(cert_not_after=NOW + timedelta(days=21.5)),
        lambda: with_probe(cert_not_after=NOW + timedelta(days=22.5)),
        DEFAULTS,
    ),
    "MX_TLS_FAILED": (
        lambda: with_probe(ok=False, result_type=ResultType.VALIDATION_FAILURE),
        good,
        DEFAULTS,
    ),
    "DANE_TLSA_VALIDATED": (
        lambda: with_mx_host(tlsa=True, tlsa_validated=True),
        lambda: with_mx_host(tlsa=True),
        DEFAULTS,
    ),
    "DANE_TLSA_UNVALIDATED": (
        lambda: with_mx_host(tlsa=True),
        lambda: with_mx_host(tlsa=True, tlsa_validated=True),
        DEFAULTS,
    ),
    "TLSRPT_MISSING": (lambda: with_tlsrpt(), good, DEFAULTS),
    "TLSRPT_MULTIPLE": (
        lambda: with_tlsrpt(
            "v=TLSRPTv1; rua=mailto:a@b.example", "v=TLSRPTv1; rua=mailto:c@d.example"
        ),
        good,
        DEFAULTS,
    ),
    "TLSRPT_INVALID": (lambda: with_tlsrpt("v=TLSRPTv1; rua=mailto a"), good, DEFAULTS),
    "TLSRPT_RUA_UNSUPPORTED": (
        lambda: with_tlsrpt("v=TLSRPTv1; rua=ftp://x.example/r"),
        good,
        DEFAULTS,
    ),
    "TLSRPT_MAILTO_NO_MX": (
        lambda: with_tlsrpt(
            "v=TLSRPTv1; rua=mailto:a@b.example", mailto_domains={"b.example": "null MX"}
        ),
        good,
        DEFAULTS,
    ),
    "TLSRPT_HTTPS_FAILED": (
        lambda: with_tlsrpt(
            "v=TLSRPTv1; rua=https://r.example/",
            https={"https://r.example/": (EndpointProblem("192.0.2.5", "certificate expired"),)},
        ),
        lambda: with_tlsrpt("v=TLSRPTv1; rua=https://r.example/", https={"https://r.example/": ()}),
        DEFAULTS,
    ),
}


def _codes(report: DomainReport) -> set[str]:
    return {f.code for f in report.findings}


def test_the_baseline_is_clean() -> None:
    report = judge_domain(good(), DEFAULTS, NOW)
    assert report.findings == () and report.status is NagiosStatus.OK
    assert report.sender.socketmap_reply == "OK secure match=mx1.example.test servername=hostname"


def test_every_code_has_a_case() -> None:
    # CHECK_FAILED: see the last test; the HOSTING_/HOSTED_ codes are `host status`'s own
    # (tests/tools/test_host_status_rules.py, tests/tools/test_host_status.py)
    host_status_own = {"HOSTING_ADDRESS_MISMATCH", "HOSTED_POLICY_REFUSED", "HOSTED_POLICY_MISSING"}
    assert set(CASES) | {"CHECK_FAILED"} | host_status_own == set(CATALOGUE)


@pytest.mark.parametrize("code", sorted(CASES))
def test_code_produced_and_absent(code: str) -> None:
    bad, near_miss, options = CASES[code]
    assert code in _codes(judge_domain(bad(), options, NOW))
    assert code not in _codes(judge_domain(near_miss(), DEFAULTS, NOW))


def test_mx_severity_depends_on_mode() -> None:
    seen = with_mx((MX1, "mx.other.example"))
    [enforce] = [
        f for f in judge_domain(seen, DEFAULTS, NOW).findings if f.code == "MX_NOT_COVERED"
    ]
    testing = replace(with_body(TESTING), mx=seen.mx, mx_hosts=seen.mx_hosts)
    [warn] = [
        f for f in judge_domain(testing, DEFAULTS, NOW).findings if f.code == "MX_NOT_COVERED"
    ]
    assert (enforce.severity, warn.severity) == (Severity.CRITICAL, Severity.WARNING)


@pytest.mark.parametrize(("days", "mode", "severity"), [
    (6.5, "enforce", Severity.CRITICAL), (8.5, "enforce", Severity.WARNING),
    (6.5, "testing", Severity.WARNING), (21.5, "enforce", Severity.WARNING),
])  # fmt: skip
def test_mx_expiry_horizons(days: float, mode: str, severity: Severity) -> None:
    seen = replace(with_body(BODY if mode == "enforce" else TESTING),
                   mx_hosts=(_mx_host(cert_not_after=NOW + timedelta(days=days)),))  # fmt: skip
    [f] = [f for f in judge_domain(seen, DEFAULTS, NOW).findings if f.code == "MX_CERT_EXPIRES"]
    assert f.severity is severity


def test_custom_critical_days() -> None:
    seen = with_probe(cert_not_after=NOW + timedelta(days=10.5))
    options = Options(mx_cert_critical_days=14)
    [f] = [f for f in judge_domain(seen, options, NOW).findings if f.code == "MX_CERT_EXPIRES"]
    assert f.severity is Severity.CRITICAL


def test_policy_host_expiry_horizons() -> None:
    for days, severity in ((6.5, Severity.CRITICAL), (20.5, Severity.WARNING)):
        seen = with_address(cert=_cert(days=days))
        [f] = [
            f for f in judge_domain(seen, DEFAULTS, NOW).findings if f.code == "POLICY_CERT_EXPIRES"
        ]
        assert f.severity is severity


def test_tlsrpt_missing_severity_by_mode() -> None:
    def severity(seen: DomainSeen) -> Severity:
        seen = replace(seen, tlsrpt=replace(seen.tlsrpt, records=()))  # type: ignore[arg-type]
        return next(f.severity for f in judge_domain(seen, DEFAULTS, NOW).findings
                    if f.code == "TLSRPT_MISSING")  # fmt: skip

    assert severity(with_body(TESTING)) is Severity.WARNING
    assert severity(good()) is Severity.INFO


def test_wildcard_covers_one_label_only() -> None:
    wildcard = BODY.replace(b"mx1.example.test", b"*.example.test")
    seen = replace(with_body(wildcard), mx=MxSeen(hosts=("a.b.example.test",)),
                   mx_hosts=(_mx_host("a.b.example.test"),))  # fmt: skip
    assert "MX_NOT_COVERED" in _codes(judge_domain(seen, DEFAULTS, NOW))


def test_sender_view_for_failures() -> None:
    report = judge_domain(with_address(cert=_cert(days=-1), status=None), DEFAULTS, NOW)
    assert report.sender.socketmap_reply == "NOTFOUND "
    assert report.sender.result_types == ("sts-webpki-invalid",)
    expired = judge_domain(
        with_probe(ok=False, result_type=ResultType.CERTIFICATE_EXPIRED), DEFAULTS, NOW
    )
    assert expired.sender.result_types == ("certificate-expired",)
    assert expired.status is NagiosStatus.CRITICAL


def test_status_precedence() -> None:
    unknown = judge_domain(with_probe(ok=False, reason="timeout"), DEFAULTS, NOW)
    assert unknown.status is NagiosStatus.UNKNOWN
    warning = judge_domain(with_body(BODY + b"mx: old.example.test\r\n"), DEFAULTS, NOW)
    assert warning.status is NagiosStatus.WARNING
    info_only = judge_domain(with_body(TESTING), DEFAULTS, NOW)
    assert info_only.status is NagiosStatus.OK
    assert Mode.TESTING  # the testing-mode reminder is information, not a problem


async def test_check_failed_only_when_the_check_itself_breaks() -> None:
    """A crash while observing one domain becomes CHECK_FAILED (UNKNOWN) for that domain only."""
    from mta_sts_policyd.tools.check.runner import check_one

    broken = await check_one("example.test", None, DEFAULTS, lambda: NOW)  # type: ignore[arg-type]
    assert [f.code for f in broken.findings] == ["CHECK_FAILED"]
    assert broken.status is NagiosStatus.UNKNOWN
    assert "CHECK_FAILED" not in _codes(judge_domain(good(), DEFAULTS, NOW))


def test_tlsrpt_endpoint_findings_name_the_address() -> None:
    """Each failing address of an https: rua endpoint is its own finding; a non-public one
    is not contacted (ADDRESS_NOT_PUBLIC, as for the policy host and the MX hosts)."""
    uri = "https://r.example/"
    problems = (
        EndpointProblem("192.0.2.5", "certificate expired"),
        EndpointProblem("10.0.0.5", "not a public address; not contacted", not_public=True),
    )
    seen = with_tlsrpt(f"v=TLSRPTv1; rua={uri}", https={uri: problems})
    found = [f for f in judge_domain(seen, DEFAULTS, NOW).findings if "uri" in dict(f.evidence)]
    assert sorted((f.code, dict(f.evidence)["address"]) for f in found) == [
        ("ADDRESS_NOT_PUBLIC", "10.0.0.5"),
        ("TLSRPT_HTTPS_FAILED", "192.0.2.5"),
    ]


def test_a_domain_that_does_not_exist_has_that_one_finding() -> None:
    """Whatever else was seen (a resolver that answers names under an NXDOMAIN), the report
    says the one thing to fix, and a sender finds no policy."""
    report = judge_domain(replace(with_mx((MX1,)), mx=MxSeen(nxdomain=True)), DEFAULTS, NOW)
    assert [f.code for f in report.findings] == ["DOMAIN_NXDOMAIN"]
    assert report.status is NagiosStatus.CRITICAL
    assert report.sender.socketmap_reply == "NOTFOUND "
    assert report.policy is None and report.mx_hosts == ()
