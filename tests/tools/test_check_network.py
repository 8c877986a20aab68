"""`check` against real loopback servers: DNS, policy hosts on several addresses, SMTP MXes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trustme

from mta_sts_policyd.cli.main import main
from support import TESTS_DIR
from support.check_world import CheckWorld, check_world, codes, derived_id, enforce_policy
from support.dns_server import DnsServer, tlsa

Setup = Callable[[str], None]
D = "example.test"
MX1, MX2 = "mx1.example.test", "mx2.example.test"
GOLDEN = TESTS_DIR / "golden"


@pytest.fixture
async def world(dns_server: DnsServer, trust_ca: trustme.CA) -> AsyncIterator[CheckWorld]:
    async with check_world(dns_server, trust_ca) as w:
        yield w


def _finding(report: dict[str, Any], code: str) -> dict[str, Any]:
    return next(f for f in report["domains"][0]["findings"] if f["code"] == code)


def _normalised(report: dict[str, Any]) -> dict[str, Any]:
    """Golden form: drop what changes from run to run (time, days left, ports)."""
    text = json.dumps(report, indent=2, sort_keys=True)
    text = re.sub(r'"checked_at": "[^"]+"', '"checked_at": "*"', text)
    text = re.sub(r'"not_after": "[^"]+"', '"not_after": "*"', text)
    text = re.sub(r'"days_left": "?-?\d+"?', '"days_left": "*"', text)
    text = re.sub(r"expires in \d+ days", "expires in * days", text)
    text = re.sub(r"port \d+", "port *", text)
    return dict(json.loads(text))


SCHEMA = json.loads((TESTS_DIR / "schema" / "check-report.schema.json").read_text())


def _golden(name: str, report: dict[str, Any]) -> None:
    """The report follows the documented schema and equals its golden file (normalised)."""
    jsonschema.validate(report, SCHEMA)
    path = GOLDEN / f"check-{name}.json"
    data = _normalised(report)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    assert data == json.loads(path.read_text())


async def test_clean_domain_is_ok(world: CheckWorld) -> None:
    await world.mx_server(MX1)
    await world.mx_server(MX2)
    world.publish(D, enforce_policy(MX1, MX2), mx=[MX1, MX2], addresses=("127.0.0.1", "127.0.0.2"))
    code, report = await world.run_check(D)
    assert codes(report) == set(), report
    assert code == 0
    sender = report["domains"][0]["sender"]
    assert sender["socketmap_reply"] == (
        "OK secure match=mx1.example.test:mx2.example.test servername=hostname"
    )
    _golden("clean", report)
    for address in ("127.0.0.1", "127.0.0.2"):  # every address was asked, with SNI and Host
        [request] = world.https[address].requests
        assert (request.sni, request.host) == (f"mta-sts.{D}", f"mta-sts.{D}")


async def test_testing_domain_with_drift(world: CheckWorld) -> None:
    await world.mx_server(MX1)
    await world.mx_server(MX2)
    policy = enforce_policy(MX1, "old.example.test", mode="testing")
    world.publish(D, policy, mx=[MX1, MX2], tlsrpt=None)
    code, report = await world.run_check(D)
    assert codes(report) == {
        "MX_NOT_COVERED",
        "MX_PATTERN_UNUSED",
        "TLSRPT_MISSING",
        "POLICY_MODE_TESTING",
    }
    assert _finding(report, "MX_NOT_COVERED")["severity"] == "warning"
    assert code == 1
    assert report["domains"][0]["sender"]["tlsrpt_result_types"] == ["validation-failure"]
    _golden("testing-drift", report)


async def test_broken_domain(world: CheckWorld) -> None:
    await world.mx_server(MX1, "expired")
    await world.mx_server(MX2, "no-starttls")
    world.publish(D, enforce_policy(MX1, MX2), mx=[MX1, MX2], addresses=("127.0.0.1", "127.0.0.2"))
    world.serve("127.0.0.2", D, b"", status=302, location="https://elsewhere.example/")
    code, report = await world.run_check(D)
    assert {"POLICY_REDIRECT", "MX_CERT_EXPIRED", "MX_STARTTLS_MISSING"} <= codes(report)
    assert code == 2
    redirect = _finding(report, "POLICY_REDIRECT")
    assert redirect["evidence"]["location"] == "https://elsewhere.example/"
    assert redirect["evidence"]["address"] == "127.0.0.2"
    assert len(world.https["127.0.0.2"].requests) == 1  # reported, never followed
    assert report["domains"][0]["sender"]["tlsrpt_result_types"] == [
        "certificate-expired",
        "starttls-not-supported",
    ]
    _golden("broken", report)


async def test_addresses_serving_different_bytes(world: CheckWorld) -> None:
    await world.mx_server(MX1)
    policy = enforce_policy(MX1)
    world.publish(D, policy, mx=[MX1], addresses=("127.0.0.1", "127.0.0.2"))
    world.serve("127.0.0.2", D, policy.replace("604800", "86400"))
    _code, report = await world.run_check(D)
    assert {"POLICY_ADDRESSES_DIFFER", "ID_NOT_BUMPED"} <= codes(report)
    assert _finding(report, "ID_NOT_BUMPED")["evidence"]["address"] == "127.0.0.2"
    # the lowest address's policy stands for the domain, whatever order DNS answers in, so
    # monitor sees the same findings on every run
    assert report["domains"][0]["policy"]["max_age"] == 604800


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("expired", "POLICY_CERT_EXPIRED"),
        ("wrong-name", "POLICY_CERT_NAME_MISMATCH"),
        ("self-signed", "POLICY_CERT_UNTRUSTED"),
        ("untrusted", "POLICY_CERT_UNTRUSTED"),
        ("none", "POLICY_TLS_FAILED"),
    ],
)
async def test_policy_host_certificates(world: CheckWorld, kind: str, code: str) -> None:
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1], addresses=("127.0.0.1", "127.0.0.2"))
    world.https["127.0.0.2"].set_policy(D, enforce_policy(MX1), cert=kind)
    exit_code, report = await world.run_check(D)
    assert _finding(report, code)["evidence"]["address"] == "127.0.0.2"
    assert exit_code == 2
    assert not any(
        f["evidence"].get("address") == "127.0.0.1" for f in report["domains"][0]["findings"]
    )


@pytest.mark.parametrize(
    ("kind", "code", "result_type"),
    [
        ("expired", "MX_CERT_EXPIRED", "certificate-expired"),
        ("wrong-name", "MX_CERT_NAME_MISMATCH", "certificate-host-mismatch"),
        ("self-signed", "MX_CERT_UNTRUSTED", "certificate-not-trusted"),
        ("no-starttls", "MX_STARTTLS_MISSING", "starttls-not-supported"),
    ],
)
async def test_mx_starttls(world: CheckWorld, kind: str, code: str, result_type: str) -> None:
    await world.mx_server(MX1)
    await world.mx_server(MX2, kind)
    world.publish(D, enforce_policy(MX1, MX2), mx=[MX1, MX2])
    exit_code, report = await world.run_check(D)
    found = _finding(report, code)
    assert (found["evidence"]["mx"], found["severity"]) == (MX2, "critical")
    assert report["domains"][0]["sender"]["tlsrpt_result_types"] == [result_type]
    assert exit_code == 2


async def test_mx_certificate_expiry_horizon(world: CheckWorld) -> None:
    """trustme-style leaves here live 30 days: within --mx-cert-warning-days 40, not 21."""
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    _code, report = await world.run_check(D, "--mx-cert-warning-days", "40")
    assert _finding(report, "MX_CERT_EXPIRES")["severity"] == "warning"
    _code, report = await world.run_check(
        D, "--mx-cert-warning-days", "40", "--mx-cert-critical-days", "35"
    )
    assert _finding(report, "MX_CERT_EXPIRES")["severity"] == "critical"
    _code, report = await world.run_check(D, "--policy-cert-warning-days", "40")
    assert "POLICY_CERT_EXPIRES" in codes(report) and "MX_CERT_EXPIRES" not in codes(report)


async def test_null_and_implicit_mx(world: CheckWorld) -> None:
    world.publish(D, enforce_policy(MX1), mx=[])
    world.dns.set_mx(D, (0, "."))
    _code, report = await world.run_check(D)
    assert "MX_NULL" in codes(report) and "MX_NOT_COVERED" not in codes(report)
    world.dns.set_mx(D)
    world.dns.set_a(D, "127.0.0.9")
    _code, report = await world.run_check(D)
    assert {"MX_IMPLICIT", "MX_NOT_COVERED", "MX_PATTERN_UNUSED"} <= codes(report)
    assert report["domains"][0]["mx_hosts"] == [D]


async def test_a_domain_that_does_not_exist(world: CheckWorld) -> None:
    """A typo: NXDOMAIN from the real resolver path, one critical finding, no implicit MX."""
    code, report = await world.run_check("nowhere.example.test")
    assert code == 2
    assert codes(report) == {"DOMAIN_NXDOMAIN"}
    assert report["domains"][0]["mx_hosts"] == []


async def test_txt_cname_chain_and_hosting(world: CheckWorld) -> None:
    await world.mx_server(MX1)
    policy = enforce_policy(MX1)
    world.publish(D, policy, mx=[MX1], txt=None)
    record = world.dns  # the provider hosts the TXT record behind a CNAME
    record.set_cname(f"_mta-sts.{D}", "sts.provider.test")
    record.set_txt("sts.provider.test", "v=STSv1; id=20260101")
    _code, report = await world.run_check(D, "--expect-cname", "sts.provider.test")
    assert "TXT_CNAME" in codes(report) and "HOSTING_CNAME_MISSING" not in codes(report)
    assert "ID_NOT_VERIFIABLE" in codes(report)
    assert _finding(report, "TXT_CNAME")["evidence"]["chain"] == (
        f"_mta-sts.{D} -> sts.provider.test"
    )
    _code, report = await world.run_check(
        D, "--expect-cname", "other.provider.test", "--expect-id", "20260101"
    )
    assert "HOSTING_CNAME_MISSING" in codes(report) and "ID_UNEXPECTED" not in codes(report)
    # the policy host delegated too: mta-sts.D is a CNAME to the provider's web server
    world.dns.set_cname(f"mta-sts.{D}", "web.provider.test")
    world.dns.set_a("web.provider.test", "127.0.0.1")
    code, report = await world.run_check(
        D, "--expect-cname", "web.provider.test", "--expect-id", "20260102"
    )
    assert "HOSTING_CNAME_MISSING" not in codes(report) and "ID_UNEXPECTED" in codes(report)
    assert _finding(report, "ID_UNEXPECTED")["severity"] == "warning" and code == 1
    [request] = world.https["127.0.0.1"].requests[-1:]
    assert request.sni == f"mta-sts.{D}"  # the name asked for, not the CNAME target


async def test_txt_problems(world: CheckWorld) -> None:
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    world.dns.set_txt(f"_mta-sts.{D}", "v=STSv1; id=1", "v=STSv1; id=2", "other")
    code, report = await world.run_check(D)
    assert {"TXT_MULTIPLE", "TXT_EXTRA_RECORDS"} <= codes(report)
    assert report["domains"][0]["sender"]["socketmap_reply"] == "NOTFOUND "
    assert code == 2
    world.dns.fail(f"_mta-sts.{D}", "servfail")
    code, report = await world.run_check(D)
    assert "DNS_LOOKUP_FAILED" in codes(report) and code == 3


async def test_tlsa_with_and_without_ad(world: CheckWorld) -> None:
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    world.dns.add(f"_25._tcp.{MX1}", tlsa(3, 1, 1, "ab" * 32))
    _code, report = await world.run_check(D)
    assert "DANE_TLSA_UNVALIDATED" in codes(report)
    world.dns.authenticated.add(f"_25._tcp.{MX1}")
    _code, report = await world.run_check(D)
    assert "DANE_TLSA_VALIDATED" in codes(report) and report["domains"][0]["sender"]["dane"]


async def test_tlsrpt_destinations(world: CheckWorld) -> None:
    await world.mx_server(MX1)
    rua = f"mailto:r@nomail.test,https://reports.test:{world.https_port}/tlsrpt"
    world.publish(D, enforce_policy(MX1), mx=[MX1], tlsrpt=f"v=TLSRPTv1; rua={rua}")
    world.dns.set_mx("nomail.test", (0, "."))
    world.dns.set_a("reports.test", "127.0.0.3")
    world.https["127.0.0.3"].set_site("reports.test", cert="expired", path=None)
    _code, report = await world.run_check(D)
    assert {"TLSRPT_MAILTO_NO_MX", "TLSRPT_HTTPS_FAILED"} <= codes(report)
    world.dns.set_mx("nomail.test", (10, MX1))
    world.https["127.0.0.3"].set_site("reports.test", path=None)
    _code, report = await world.run_check(D)
    assert not {"TLSRPT_MAILTO_NO_MX", "TLSRPT_HTTPS_FAILED"} & codes(report)


async def test_private_addresses_refused_by_default(world: CheckWorld) -> None:
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    world.dns.set_a(MX1, "127.0.0.10")
    args = [a for a in world.base_args() if a != "--allow-private"]

    def call() -> int:
        return main(["check", D, *args])

    assert await asyncio.to_thread(call) == 3
    assert world.https["127.0.0.1"].requests == []


async def test_generate_serve_check_round_trip(world: CheckWorld, tmp_path: Path) -> None:
    await world.mx_server(MX1)
    await world.mx_server(MX2)
    world.dns.set_mx(D, (10, MX1), (20, MX2))
    args = [
        "generate",
        "--domain",
        D,
        "--mode",
        "enforce",
        "--nameserver",
        world.dns.nameserver,
        "--write",
        str(tmp_path),
        "--json",
        "--force",  # nothing served yet and no TLS reports kept: the switch would wait
    ]
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return main(args)

    assert await asyncio.to_thread(call) == 0
    generated = json.loads(out.getvalue())
    record = generated["txt_record"].split('"')[1]
    body = (tmp_path / D / ".well-known/mta-sts.txt").read_bytes()
    world.publish(D, body, txt=record, mx=[])
    code, report = await world.run_check(D)
    assert codes(report) == set() and code == 0
    edited = body.replace(b"max_age: 604800", b"max_age: 604801")
    world.serve("127.0.0.1", D, edited)
    code, report = await world.run_check(D)
    assert codes(report) == {"ID_NOT_BUMPED"} and code == 2


async def test_text_output_and_from_file(
    world: CheckWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    world.publish("other.test", enforce_policy(MX1, mode="testing"), mx=[MX1], tlsrpt=None)
    listing = tmp_path / "domains"
    listing.write_text(f"# my domains\n{D}\nother.test  # testing\n")
    code = await asyncio.to_thread(main, ["check", "--from-file", str(listing), *world.base_args()])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith(f"{D}: OK (no findings)")
    assert "other.test: WARNING" in out and "\033[" not in out
    assert "a sender concludes: Postfix gets 'OK secure match=mx1.example.test" in out
    assert await asyncio.to_thread(main, ["check", "not a domain", *world.base_args()]) == 3


async def test_names_that_are_no_domains_do_not_stop_the_others_being_checked(
    world: CheckWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check A B C` with B no domain: A and C are checked, B is named at the end, and the
    status is at least UNKNOWN (3), the code for a name that could not be checked; a critical
    finding still wins (2)."""
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    world.publish("other.test", enforce_policy(MX1), mx=[MX1])
    code, report = await world.run_check(D, "a..b", "other.test", "[192.0.2.1]")
    assert code == 3
    jsonschema.validate(report, SCHEMA)
    assert [d["domain"] for d in report["domains"]] == [D, "other.test"]
    assert [d["status"] for d in report["domains"]] == ["OK", "OK"]
    assert (report["status"], report["exit_code"]) == ("UNKNOWN", 3)
    assert report["not_checked"] == [
        "'a..b' is not a domain name",
        "'[192.0.2.1]' is not a domain name",
    ]
    _ok, clean = await world.run_check(D)
    assert "not_checked" not in clean  # the document is unchanged when every name is checked

    def text(*names: str) -> int:
        return main(["check", *world.base_args(), *names])

    capsys.readouterr()
    assert await asyncio.to_thread(text, "a..b", D) == 3
    out, err = capsys.readouterr()
    assert out.startswith(f"{D}: OK (no findings)")
    assert err == "check: 'a..b' is not a domain name: not checked\n"
    world.serve("127.0.0.1", "other.test", b"not a policy")  # CRITICAL in enforce
    assert await asyncio.to_thread(text, "other.test", "a..b") == 2


async def test_http_limits_on_a_real_server(world: CheckWorld) -> None:
    """Status, type and the 64 KiB cap, judged per address by the sender's own rules."""
    await world.mx_server(MX1)
    policy = enforce_policy(MX1)
    world.publish(D, policy, mx=[MX1], addresses=("127.0.0.1", "127.0.0.2", "127.0.0.3"))
    world.serve("127.0.0.1", D, policy, status=404)
    world.serve("127.0.0.2", D, policy, content_type="text/html")
    world.serve("127.0.0.3", D, policy + "x" * 70_000, framing="close")
    _code, report = await world.run_check(D)
    by_address = {
        f["evidence"]["address"]: f["code"]
        for f in report["domains"][0]["findings"]
        if f["code"].startswith("POLICY_") and "address" in f["evidence"]
    }
    assert by_address == {
        "127.0.0.1": "POLICY_HTTP_STATUS",
        "127.0.0.2": "POLICY_CONTENT_TYPE",
        "127.0.0.3": "POLICY_TOO_LARGE",
    }
    # a sender may reach any of the three addresses: each classification is possible
    assert report["domains"][0]["sender"]["tlsrpt_result_types"] == [
        "sts-policy-fetch-error",
        "sts-policy-invalid",
    ]


async def test_a_slow_policy_host_is_cut_off_at_the_timeout(world: CheckWorld) -> None:
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1], drip_interval=0.5, drip_size=4)
    started = asyncio.get_running_loop().time()
    _code, report = await world.run_check(D, "--timeout", "1")
    assert "POLICY_FETCH_FAILED" in codes(report)
    assert asyncio.get_running_loop().time() - started < 8


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_concurrency_bounds_domains_in_flight(world: CheckWorld, concurrency: int) -> None:
    """Three domains share one MX whose banner takes 1 s: with --concurrency N at most N
    sessions are open at once (and with 3, they do overlap)."""
    mx = await world.mx_server(MX1)
    mx.behaviour.banner_delay = 1.0
    names = [f"d{i}.test" for i in range(3)]
    for name in names:
        world.publish(name, enforce_policy(MX1), mx=[MX1])
    code, report = await world.run_check(*names, "--concurrency", str(concurrency))
    assert code == 0 and len(report["domains"]) == 3
    assert mx.record.peak_active <= concurrency
    assert mx.record.peak_active >= min(concurrency, 2)


class _Terminal(io.StringIO):
    """stderr as an operator's terminal: `isatty()` says yes."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
async def test_progress_goes_to_stderr_on_a_terminal_only(
    world: CheckWorld, monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    stderr = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    names = ["p1.test", "p2.test", "p3.test"]
    with contextlib.redirect_stdout(io.StringIO()):
        await asyncio.to_thread(main, ["check", *names, *world.base_args()])
    shown = stderr.getvalue()
    if terminal:
        assert "checked 1/3" in shown and "checked 3/3" in shown
    else:
        assert "checked" not in shown


async def test_every_address_is_reported_with_its_facts(
    world: CheckWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    """The policy host and the MX each on an A and an AAAA address, one of each broken: every
    address is shown with its TLS version, chain, names, expiry (and HTTP answer), whatever the
    findings, in the JSON and in the text."""
    await world.mx_server(MX1)
    await world.mx_server(MX1, "self-signed", address="::1")
    policy = enforce_policy(MX1)
    world.publish(D, policy, mx=[MX1], addresses=("127.0.0.1", "::1"))
    world.https["::1"].set_policy(D, policy, cert="wrong-name")
    code, report = await world.run_check(D)
    assert code == 2
    entry = report["domains"][0]
    host = entry["policy_host"]
    assert host["host"] == f"mta-sts.{D}" and host["error"] is None
    good, bad = host["addresses"]
    assert (good["address"], bad["address"]) == ("127.0.0.1", "::1")
    for seen in (good, bad):
        assert seen["tried"] and seen["tls_version"] in ("TLSv1.2", "TLSv1.3")
        assert 0 < seen["days_left"] < 40 and seen["chain"] == "trusted"
    assert good["names_cover_host"] and good["error"] is None
    assert (good["http_status"], good["content_type"]) == (200, "text/plain")
    assert good["size"] == len(policy) and len(good["sha256"]) == 64
    assert bad["names_cover_host"] is False and f"mta-sts.{D}" not in bad["cert_names"]
    assert bad["http_status"] is None and bad["error"]  # the sender's client refuses the name
    [mx] = entry["mx_servers"]
    ok, untrusted = mx["addresses"]
    assert (ok["address"], untrusted["address"]) == ("127.0.0.10", "::1")
    assert ok["starttls"] and ok["chain"] == "trusted" and ok["result_type"] is None
    assert untrusted["result_type"] == "certificate-not-trusted"
    assert untrusted["chain"] == "untrusted" and untrusted["tls_version"] == ok["tls_version"]
    assert untrusted["cert_names"] == [MX1] and untrusted["days_left"] is not None
    assert _finding(report, "MX_CERT_UNTRUSTED")["evidence"]["address"] == "::1"
    assert _finding(report, "POLICY_CERT_NAME_MISMATCH")["evidence"]["address"] == "::1"

    await asyncio.to_thread(main, ["check", D, *world.base_args()])
    text = capsys.readouterr().out
    assert f"  policy host mta-sts.{D}:\n    127.0.0.1: TLSv1." in text
    assert re.search(r"\n    ::1: TLSv1\.\d, chain trusted, names \[[^]]*\] do not cover it", text)
    assert "HTTP 200, text/plain, " in text
    assert f"  MX {MX1}:\n    127.0.0.10: STARTTLS, TLSv1." in text
    untrusted_line = r"\n    ::1: STARTTLS, TLSv1\.\d, chain untrusted, .* expires in \d+ days"
    assert re.search(untrusted_line, text)


async def test_private_addresses_are_listed_as_not_contacted(world: CheckWorld) -> None:
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    world.dns.set_a(MX1, "127.0.0.10")
    args = [a for a in world.base_args() if a != "--allow-private"]
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return main(["check", "--json", D, *args])

    assert await asyncio.to_thread(call) == 3
    report = json.loads(out.getvalue())
    assert "ADDRESS_NOT_PUBLIC" in codes(report)
    entry = report["domains"][0]
    [address] = entry["policy_host"]["addresses"]
    assert address["tried"] is False and address["http_status"] is None
    assert entry["mx_servers"][0]["addresses"][0]["tried"] is False


async def test_tlsrpt_https_endpoint_checked_on_every_address(world: CheckWorld) -> None:
    """The endpoint's A address is fine, its AAAA address has an expired certificate: a sender
    may post to either, so the failing address is reported (the first one alone hid it)."""
    await world.mx_server(MX1)
    rua = f"https://reports.test:{world.https_port}/tlsrpt"
    world.publish(D, enforce_policy(MX1), mx=[MX1], tlsrpt=f"v=TLSRPTv1; rua={rua}")
    world.dns.set_a("reports.test", "127.0.0.3")
    world.dns.set_aaaa("reports.test", "::1")
    world.https["127.0.0.3"].set_site("reports.test", path=None)
    world.https["::1"].set_site("reports.test", cert="expired", path=None)
    code, report = await world.run_check(D)
    failed = [f for f in report["domains"][0]["findings"] if f["code"] == "TLSRPT_HTTPS_FAILED"]
    assert [f["evidence"]["address"] for f in failed] == ["::1"]
    assert failed[0]["evidence"]["uri"] == rua and "expired" in failed[0]["message"]
    assert code == 1
    world.https["::1"].set_site("reports.test", path=None)
    code, report = await world.run_check(D)
    assert "TLSRPT_HTTPS_FAILED" not in codes(report) and code == 0


async def test_every_code_from_real_servers(world: CheckWorld) -> None:
    """The codes the scenarios above do not reach, each produced by a domain of its own on the
    loopback servers (one `check` run over all of them); test_clean_domain_is_ok is where none
    of them appears. The pure rules have a near miss for every code (test_check_rules.py)."""
    await world.mx_server(MX1)
    broken_tls = await world.mx_server("mx-broken-tls.example.test")
    broken_tls.behaviour.plaintext_after_starttls = True
    world.dns.set_a("mx-nobody.example.test", "127.0.0.39")  # nothing listens there
    good = enforce_policy(MX1)

    def pub(policy: str | bytes = good, *then: Callable[[str], object], **kw: Any) -> Setup:
        def setup(d: str) -> None:
            world.publish(d, policy, **{"mx": [MX1], **kw})
            for step in then:
                step(d)

        return setup

    def txt(d: str) -> None:
        world.dns.set_txt(f"_mta-sts.{d}", f"v=STSv1; id={derived_id(good)}", ttl=86401)

    def two_tlsrpt(d: str) -> None:
        rua = "v=TLSRPTv1; rua=mailto:"
        world.dns.set_txt(f"_smtp._tls.{d}", f"{rua}a@{d}", f"{rua}b@{d}")

    def unreachable(d: str) -> None:
        world.dns.set_a(f"mta-sts.{d}", "127.0.0.1", "127.0.0.4")  # nothing listens on .4

    nobody, broken = "mx-nobody.example.test", "mx-broken-tls.example.test"
    scenarios: dict[str, tuple[str, Setup]] = {
        "TXT_MISSING": ("t1.test", pub(txt=None)),
        "TXT_INVALID": ("t2.test", pub(txt="v=STSv1; id=a-b")),
        "TXT_EXTENSION": ("t3.test", pub(txt=f"v=STSv1; id={derived_id(good)}; ext=1")),
        "TXT_TTL_HIGH": ("t4.test", pub(good, txt, txt=None)),
        "POLICY_HOST_NO_ADDRESS": ("p1.test", pub(addresses=())),
        "POLICY_CONNECT_FAILED": ("p2.test", pub(good, unreachable)),
        "POLICY_SYNTAX": ("p3.test", pub("version: STSv1\nmode: on\n", txt="v=STSv1; id=1")),
        "POLICY_BOM": ("p4.test", pub(b"\xef\xbb\xbf" + good.encode())),
        "POLICY_MIXED_LINE_ENDINGS": ("p5.test", pub(good + "x-a: 1\n")),
        "POLICY_DUPLICATE_KEY": ("p6.test", pub(good + "mode: testing\r\n")),
        "POLICY_UNKNOWN_KEY": ("p7.test", pub(good + "x-note: hi\r\n")),
        "POLICY_MAX_AGE_RANGE": ("p8.test", pub(enforce_policy(MX1, max_age=31557601))),
        "POLICY_MAX_AGE_SHORT": ("p9.test", pub(enforce_policy(MX1, max_age=3600))),
        "POLICY_MODE_NONE": ("p10.test", pub("version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n")),
        "MX_CONNECT_FAILED": ("m1.test", pub(enforce_policy(nobody), mx=[nobody])),
        "MX_TLS_FAILED": ("m2.test", pub(enforce_policy(broken), mx=[broken])),
        "TLSRPT_MULTIPLE": ("r1.test", pub(good, two_tlsrpt, tlsrpt=None)),
        "TLSRPT_INVALID": ("r2.test", pub(tlsrpt="v=TLSRPTv1; rua=mailto a")),
        "TLSRPT_RUA_UNSUPPORTED": ("r3.test", pub(tlsrpt="v=TLSRPTv1; rua=ftp://r3.test/r")),
    }
    for domain, setup in scenarios.values():
        setup(domain)
    exit_code, report = await world.run_check(*(d for d, _ in scenarios.values()))
    for code, (domain, _) in scenarios.items():
        assert code in codes(report, domain), (code, codes(report, domain))
    assert exit_code == 2  # the worst domain's status
    by_domain = {d["domain"]: d for d in report["domains"]}
    assert by_domain["m1.test"]["status"] == "UNKNOWN"  # could not check: not a failure
    found = {(d, f["code"]): f for d, e in by_domain.items() for f in e["findings"]}
    assert found["p2.test", "POLICY_CONNECT_FAILED"]["evidence"]["address"] == "127.0.0.4"
    assert found["p3.test", "POLICY_SYNTAX"]["evidence"]["line"] == "2"
