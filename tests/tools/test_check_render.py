"""`check` output from hand-made observations: the per-address facts (policy host and MX
hosts) and the text form (colour only when asked, i.e. on a terminal)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.probe.result import ProbeResult
from mta_sts_policyd.sts.model import TxtAbsent
from mta_sts_policyd.tools.check.addresses import mx_host_view, policy_host_view
from mta_sts_policyd.tools.check.judge import judge_domain
from mta_sts_policyd.tools.check.observations import (
    CertSeen,
    DomainSeen,
    MxAddressSeen,
    MxHostSeen,
    MxSeen,
    Options,
    PolicyAddressSeen,
    PolicyHostSeen,
    TxtSeen,
)
from mta_sts_policyd.tools.check.render import as_text

NOW = datetime(2026, 6, 1, tzinfo=UTC)
HOST, MX = "mta-sts.example.test", "mx1.example.test"
BODY = b"version: STSv1\r\nmode: testing\r\nmx: mx1.example.test\r\nmax_age: 86400\r\n"


def _probe(address: str, **kw: object) -> ProbeResult:
    fields: dict[str, object] = dict(mx_host=MX, address=address, ok=True, result_type=None,
        reason="ok", failure_reason_code=None, tls_version="TLSv1.3",
        cert_not_after=NOW + timedelta(days=10.5), cert_names=(MX,), receiving_helo=MX,
        checked_at=0.0)  # fmt: skip
    fields.update(kw)
    return ProbeResult(**fields)  # type: ignore[arg-type]


def test_policy_addresses_sorted_with_their_facts() -> None:
    cert = CertSeen((HOST,), NOW + timedelta(days=3.5))
    seen = PolicyHostSeen(
        HOST,
        addresses=(
            PolicyAddressSeen(
                "2001:db8::1",
                cert=cert,
                tls_version="TLSv1.2",
                status=404,
                headers={"content-type": "text/html"},
                body=b"gone",
            ),
            PolicyAddressSeen("192.0.2.9", not_public=True),
            PolicyAddressSeen("192.0.2.1", connect_error="refused"),
            PolicyAddressSeen(
                "192.0.2.10",
                cert=replace(
                    cert, names=("other.test",), verify_error=ResultType.CERTIFICATE_EXPIRED
                ),
                tls_version="TLSv1.3",
                fetch_error="certificate expired",
            ),
        ),
    )
    view = policy_host_view(seen, NOW)
    shown = [a.to_json() for a in view.addresses]
    assert [a["address"] for a in shown] == ["192.0.2.1", "192.0.2.9", "192.0.2.10", "2001:db8::1"]
    refused, private, expired, v6 = shown
    assert refused["tried"] and refused["error"] == "refused" and refused["chain"] is None
    assert not private["tried"] and private["tls_version"] is None
    assert (expired["chain"], expired["names_cover_host"]) == ("expired", False)
    assert expired["error"] == "certificate expired" and expired["http_status"] is None
    assert v6 == {
        "address": "2001:db8::1", "tried": True, "error": None, "tls_version": "TLSv1.2",
        "chain": "trusted", "cert_names": [HOST], "names_cover_host": True,
        "not_after": "2026-06-04T12:00:00Z", "days_left": 3, "http_status": 404,
        "content_type": "text/html", "size": 4, "sha256": hashlib.sha256(b"gone").hexdigest(),
    }  # fmt: skip


def test_mx_addresses_per_result_type() -> None:
    seen = MxHostSeen(
        MX,
        addresses=(
            MxAddressSeen(
                "192.0.2.12",
                probe=_probe(
                    "192.0.2.12",
                    ok=False,
                    result_type=ResultType.STARTTLS_NOT_SUPPORTED,
                    reason="no STARTTLS",
                    tls_version=None,
                    cert_not_after=None,
                    cert_names=(),
                ),
            ),
            MxAddressSeen(
                "192.0.2.11",
                probe=_probe(
                    "192.0.2.11",
                    ok=False,
                    result_type=ResultType.CERTIFICATE_HOST_MISMATCH,
                    reason="names",
                    cert_names=("a.test",),
                ),
            ),
            MxAddressSeen("192.0.2.10", probe=_probe("192.0.2.10")),
            MxAddressSeen(
                "192.0.2.13",
                probe=_probe(
                    "192.0.2.13",
                    ok=False,
                    reason="timed out",
                    tls_version=None,
                    cert_not_after=None,
                    cert_names=(),
                ),
            ),
        ),
    )
    ok, mismatch, no_tls, timeout = (a.to_json() for a in mx_host_view(seen, NOW).addresses)
    assert (ok["starttls"], ok["chain"], ok["names_cover_host"], ok["days_left"]) == (
        True, "trusted", True, 10)  # fmt: skip
    assert ok["error"] is None and ok["result_type"] is None
    assert (mismatch["chain"], mismatch["names_cover_host"]) == ("trusted", False)
    assert mismatch["result_type"] == "certificate-host-mismatch" and mismatch["error"] == "names"
    assert (no_tls["starttls"], no_tls["tls_version"], no_tls["chain"]) == (False, None, None)
    assert no_tls["result_type"] == "starttls-not-supported"
    assert (timeout["starttls"], timeout["error"], timeout["result_type"]) == (
        None, "timed out", None)  # fmt: skip


def test_text_lists_every_address() -> None:
    policy_host = PolicyHostSeen(HOST, addresses=(
        PolicyAddressSeen("192.0.2.1", cert=CertSeen((HOST,), NOW + timedelta(days=40)),
                          tls_version="TLSv1.3", status=200,
                          headers={"content-type": "text/plain"}, body=BODY),
        PolicyAddressSeen("192.0.2.2", not_public=True),
    ))  # fmt: skip
    mx = MxHostSeen(MX, addresses=(MxAddressSeen("192.0.2.10", probe=_probe("192.0.2.10")),))
    seen = DomainSeen(
        "example.test",
        TxtSeen("_mta-sts.example.test", TxtAbsent()),
        policy_host,
        MxSeen(hosts=(MX, "mx2.example.test")),
        (mx, MxHostSeen("mx2.example.test")),
    )
    text = as_text([judge_domain(seen, Options(), NOW)], colour=False)
    assert (
        f"  policy host {HOST}:\n"
        "    192.0.2.1: TLSv1.3, chain trusted, names [mta-sts.example.test] cover it, "
        f"expires in 40 days, HTTP 200, text/plain, {len(BODY)} bytes\n"
        "    192.0.2.2: not contacted (not a public address)\n"
        f"  MX {MX}:\n"
        "    192.0.2.10: STARTTLS, TLSv1.3, chain trusted, names [mx1.example.test] cover it, "
        "expires in 10 days\n"
        "  MX mx2.example.test: no A or AAAA record\n"
    ) in text


def test_colour_only_when_asked() -> None:
    seen = DomainSeen("example.test", TxtSeen("_mta-sts.example.test", TxtAbsent()))
    report = judge_domain(seen, Options(), NOW)
    painted = as_text([report], colour=True)
    assert painted.startswith("example.test: \033[31mCRITICAL\033[0m")
    assert "\033[31mcritical\033[0m TXT_MISSING" in painted
    assert "\033[" not in as_text([report], colour=False)
