"""`host status`'s pure rules on hand-made observations (the network side: test_host_status.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.sts import parse_policy
from mta_sts_policyd.sts.txt import select_sts_record
from mta_sts_policyd.tools.check.findings import NagiosStatus
from mta_sts_policyd.tools.check.observations import Options, TxtSeen
from mta_sts_policyd.tools.host_status.judge import Expectations, HostedSeen, judge_hosted
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
