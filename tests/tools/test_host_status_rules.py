"""`host status`'s pure rules on hand-made observations (the network side: test_host_status.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.sts import parse_policy
from mta_sts_policyd.sts.txt import select_sts_record
from mta_sts_policyd.tools.check.findings import NagiosStatus
from mta_sts_policyd.tools.check.observations import Options, TxtSeen
from mta_sts_policyd.tools.host_status.judge import (
    Expectations,
    HostedSeen,
    judge_hosted,
    reported,
)
from mta_sts_policyd.tools.policy_id import policy_id

NOW = datetime(2026, 12, 2, tzinfo=UTC)
BODY = b"version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 604800\n"
ID = policy_id(parse_policy(BODY))
HERE = Expectations(addresses=frozenset({"192.0.2.1", "2001:db8::1"}))


def seen(
    *,
    addresses: tuple[str, ...] = ("192.0.2.1",),
    chain: tuple[tuple[str, str], ...] = (),
    txt: str | None = f"v=STSv1; id={ID}",
    days: int | None = 60,
) -> HostedSeen:
    records = [[txt.encode()]] if txt is not None else []
    result = select_sts_record(records)
    return HostedSeen(
        domain="a.test",
        body=BODY,
        addresses=addresses,
        chain=chain,
        address_error=None,
        txt=TxtSeen("_mta-sts.a.test", result, (txt,) if txt else ()),
        validity=None if days is None else (NOW - timedelta(days=1), NOW + timedelta(days=days)),
    )


def codes(s: HostedSeen, expect: Expectations = HERE) -> set[str]:
    return {f.code for f in judge_hosted(s, expect, Options(), NOW).findings}


def test_all_good_is_ok() -> None:
    report = judge_hosted(seen(), HERE, Options(), NOW)
    assert report.findings == () and report.status is NagiosStatus.OK
    assert (report.delegation, report.id_verdict, report.cert_days_left) == (
        "verified",
        "matches",
        60,
    )


def test_one_foreign_address_among_ours_is_a_mismatch() -> None:
    assert codes(seen(addresses=("192.0.2.1", "203.0.113.1"))) == {"HOSTING_ADDRESS_MISMATCH"}


def test_cname_expectation() -> None:
    expect = Expectations(cnames=frozenset({"p.provider.test"}))
    assert codes(seen(chain=(("mta-sts.a.test", "p.provider.test"),)), expect) == set()
    assert codes(seen(chain=(("mta-sts.a.test", "q.other.test"),)), expect) == {
        "HOSTING_CNAME_MISSING"
    }


def test_certificate_thresholds() -> None:
    assert codes(seen(days=30)) == set()
    assert codes(seen(days=21)) == {"POLICY_CERT_EXPIRES"}
    assert codes(seen(days=None)) == {"POLICY_TLS_FAILED"}


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=32))
def test_any_id_is_judged_and_never_crashes(txt_id: str) -> None:
    report = judge_hosted(seen(txt=f"v=STSv1; id={txt_id}"), HERE, Options(), NOW)
    assert report.txt_id == txt_id
    found = {f.code for f in report.findings}
    if txt_id == ID:
        assert found == set()
    elif re.fullmatch("mspd1[0-9a-f]{27}", txt_id):
        assert found == {"ID_NOT_BUMPED"}
    else:
        assert found == {"ID_NOT_VERIFIABLE"} and report.status is NagiosStatus.OK


def test_a_domain_without_a_served_policy_is_reported_only_while_it_matters() -> None:
    missing = replace(seen(), body=None, policy_file="/p/a.test/.well-known/mta-sts.txt")
    assert reported(missing)  # the TXT record is out: senders get 404
    report = judge_hosted(missing, HERE, Options(), NOW)
    assert report.status is NagiosStatus.CRITICAL and report.policy == "missing"
    assert {f.code for f in report.findings} == {"HOSTED_POLICY_MISSING"}
    assert (report.served_id, report.id_verdict) == (None, "no-policy")
    retired = replace(missing, txt=seen(txt=None).txt)
    assert not reported(retired) and reported(replace(retired, listed=True))
    refused = replace(missing, refused="line 4: max_age: 'forever' is not a number")
    assert reported(replace(refused, txt=retired.txt))
    kept = judge_hosted(replace(refused, body=BODY), HERE, Options(), NOW)
    assert kept.policy == "last-good" and kept.status is NagiosStatus.CRITICAL
    assert "last good version" in kept.findings[0].message and kept.served_id == ID


def test_a_certificate_in_use_that_has_expired_is_expired_not_missing() -> None:
    report = judge_hosted(seen(days=-2), HERE, Options(), NOW)
    assert {f.code for f in report.findings} == {"POLICY_CERT_EXPIRED"}
    assert report.cert_expired_at == NOW - timedelta(days=2)
    assert "expired at 2026-11-30T00:00:00Z" in report.findings[0].message
