"""MX STARTTLS probe against loopback SMTP servers: RFC 8461 §4, §4.1, §5, RFC 8460 §4.3 result
types."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from conftest import StsWorld
from mta_sts_policyd.cli.probe import add_probe_parser, probe_command, run_probe
from mta_sts_policyd.config.settings import Config, DiscoveryConfig
from mta_sts_policyd.errors import ConfigError, PolicyFetchError, ResultType
from mta_sts_policyd.probe.prober import MxProber, ProbeResult
from mta_sts_policyd.probe.smtp import _read_reply, _Stop
from mta_sts_policyd.probe.tls import classify_verify_error, describe_certificate, matches_host
from mta_sts_policyd.tlsrpt.shadow.label import probe_failure_detail
from support.certs import CertFactory
from support.dns_server import DnsServer
from support.ports import free_port, ipv6_loopback
from support.smtp_server import (
    LoopbackSmtpServer,
    SmtpBehaviour,
    SmtpRecord,
    trustme_context,
)

MX = "mx.example.test"
FAST = 2.0  # per-step timeout for servers that answer


async def loopback(_host: str) -> list[str]:
    return ["127.0.0.1"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(ca: trustme.CA, tmp_path: Path) -> CertFactory:
    """Leaves trustme cannot make (no SAN, self-signed, partial wildcards) from the same CA."""
    return CertFactory(ca, tmp_path)


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def prober(ca_file: str | None, port: int, **kw: object) -> MxProber:
    args: dict[str, object] = {
        "ca_file": ca_file,
        "timeout": FAST,
        "port": port,
        "resolve": loopback,
        "ehlo_name": "client.example.test",
    }
    args.update(kw)
    return MxProber(**args)  # type: ignore[arg-type]


async def probe_with(
    behaviour: SmtpBehaviour, ca_file: str, **kw: object
) -> tuple[ProbeResult, SmtpRecord]:
    async with LoopbackSmtpServer(behaviour) as srv:
        return await prober(ca_file, srv.port, **kw).probe(MX), srv.record


@pytest.fixture
async def valid_server(ca: trustme.CA) -> AsyncIterator[LoopbackSmtpServer]:
    tls = trustme_context(ca.issue_cert(MX))
    async with LoopbackSmtpServer(SmtpBehaviour(tls=tls)) as srv:
        yield srv


# --- passing MX -----------------------------------------------------------------------------


async def test_valid_certificate_passes(valid_server: LoopbackSmtpServer, ca_file: str) -> None:
    result = await prober(ca_file, valid_server.port).probe(MX)
    assert result.ok, result.reason
    assert result.result_type is None and not result.transient
    assert result.address == "127.0.0.1"
    assert result.tls_version in ("TLSv1.2", "TLSv1.3")
    assert MX in result.cert_names
    assert result.cert_not_after is not None and result.cert_not_after > dt.datetime.now(dt.UTC)
    assert result.receiving_helo == MX
    assert probe_failure_detail(result) is None


async def test_sni_is_the_mx_host_name(valid_server: LoopbackSmtpServer, ca_file: str) -> None:
    await prober(ca_file, valid_server.port).probe(MX.upper() + ".")
    assert valid_server.record.sni == [MX]


async def test_session_ends_with_quit_after_tls(
    valid_server: LoopbackSmtpServer, ca_file: str
) -> None:
    await prober(ca_file, valid_server.port).probe(MX)
    cmds = valid_server.record.commands
    assert cmds == ["EHLO client.example.test", "STARTTLS", "QUIT"]
    assert valid_server.record.tls_established == 1


async def test_wildcard_certificate_covers_one_label(ca: trustme.CA, ca_file: str) -> None:
    tls = trustme_context(ca.issue_cert("*.example.test"))
    result, _ = await probe_with(SmtpBehaviour(tls=tls), ca_file)
    assert result.ok, result.reason


async def test_trust_store_honours_ssl_cert_file(
    valid_server: LoopbackSmtpServer, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    result = await prober(None, valid_server.port).probe(MX)
    assert result.ok, result.reason


async def test_trust_store_without_the_ca_rejects(
    valid_server: LoopbackSmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    result = await prober(None, valid_server.port).probe(MX)
    assert result.result_type is ResultType.CERTIFICATE_NOT_TRUSTED


# --- certificate failures (RFC 8460 §4.3.1) -------------------------------------------------


async def test_wrong_name_is_host_mismatch(ca: trustme.CA, ca_file: str) -> None:
    tls = trustme_context(ca.issue_cert("other.example.test"))
    result, _ = await probe_with(SmtpBehaviour(tls=tls), ca_file)
    assert not result.ok
    assert result.result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    assert result.cert_names == ("other.example.test",)
    assert "other.example.test" in result.reason and MX in result.reason


@pytest.mark.parametrize(
    "names",
    [
        ("*.mx.example.test",),  # covers a.mx.example.test, not mx.example.test
        ("*.test",),  # wildcard over a whole TLD
        ("m*.example.test",),  # partial wildcard: not a whole left-most label
        ("example.test",),
    ],
)
async def test_wildcard_rules(certs: CertFactory, ca_file: str, names: tuple[str, ...]) -> None:
    tls = certs.context("valid", names)
    result, _ = await probe_with(SmtpBehaviour(tls=tls), ca_file)
    assert result.result_type is ResultType.CERTIFICATE_HOST_MISMATCH, result.reason


async def test_common_name_alone_is_not_enough(certs: CertFactory, ca_file: str) -> None:
    result, _ = await probe_with(SmtpBehaviour(tls=certs.context("cn-only", (MX,))), ca_file)
    assert result.result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    assert result.cert_names == ()
    assert "CN" in result.reason


async def test_expired_certificate(ca: trustme.CA, ca_file: str) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    leaf = ca.issue_cert(MX, not_before=past - dt.timedelta(days=30), not_after=past)
    result, record = await probe_with(SmtpBehaviour(tls=trustme_context(leaf)), ca_file)
    assert result.result_type is ResultType.CERTIFICATE_EXPIRED
    assert result.failure_reason_code == "certificate has expired"
    # the certificate was read in a second, non-verifying session for the report
    assert record.connections == 2
    assert result.cert_not_after is not None
    assert abs(result.cert_not_after - past) < dt.timedelta(seconds=5)
    assert result.cert_names == (MX,)


async def test_self_signed_certificate(certs: CertFactory, ca_file: str) -> None:
    result, _ = await probe_with(SmtpBehaviour(tls=certs.context("self-signed", (MX,))), ca_file)
    assert result.result_type is ResultType.CERTIFICATE_NOT_TRUSTED
    assert result.failure_reason_code is not None and "self" in result.failure_reason_code
    assert result.cert_names == (MX,)


async def test_untrusted_issuer(ca_file: str) -> None:
    foreign = trustme.CA()
    result, _ = await probe_with(
        SmtpBehaviour(tls=trustme_context(foreign.issue_cert(MX))), ca_file
    )
    assert result.result_type is ResultType.CERTIFICATE_NOT_TRUSTED
    assert result.failure_reason_code == "unable to get local issuer certificate"
    detail = probe_failure_detail(result, sending_mta_ip="127.0.0.1")
    assert detail is not None
    assert detail.result_type is ResultType.CERTIFICATE_NOT_TRUSTED
    assert detail.receiving_mx_hostname == MX and detail.receiving_ip == "127.0.0.1"
    assert detail.receiving_mx_helo == MX
    assert detail.failure_reason_code == result.failure_reason_code


# --- STARTTLS / handshake failures -----------------------------------------------------------


async def test_starttls_not_offered(ca_file: str) -> None:
    async with LoopbackSmtpServer(SmtpBehaviour(tls=None)) as srv:
        result = await prober(ca_file, srv.port).probe(MX)
        assert srv.record.commands[-1] == "QUIT"
    assert result.result_type is ResultType.STARTTLS_NOT_SUPPORTED
    assert result.failure_reason_code == "starttls-not-offered"
    assert result.receiving_helo == MX


async def test_starttls_refused(ca: trustme.CA, ca_file: str) -> None:
    tls = trustme_context(ca.issue_cert(MX))
    behaviour = SmtpBehaviour(tls=tls, starttls_reply="454 4.7.0 TLS not available")
    result, _ = await probe_with(behaviour, ca_file)
    assert result.result_type is ResultType.STARTTLS_NOT_SUPPORTED
    assert "454" in result.reason


async def test_ehlo_rejected_means_no_starttls(ca: trustme.CA, ca_file: str) -> None:
    behaviour = SmtpBehaviour(tls=trustme_context(ca.issue_cert(MX)), ehlo_reply_code=550)
    result, _ = await probe_with(behaviour, ca_file)
    assert result.result_type is ResultType.STARTTLS_NOT_SUPPORTED


async def test_handshake_failure_is_validation_failure(ca: trustme.CA, ca_file: str) -> None:
    tls = trustme_context(ca.issue_cert(MX))
    result, _ = await probe_with(SmtpBehaviour(tls=tls, plaintext_after_starttls=True), ca_file)
    assert result.result_type is ResultType.VALIDATION_FAILURE
    assert result.failure_reason_code is not None
    assert result.failure_reason_code.startswith("tls-handshake-failed")


async def test_tls_handshake_timeout_is_transient(ca: trustme.CA, ca_file: str) -> None:
    tls = trustme_context(ca.issue_cert(MX))
    behaviour = SmtpBehaviour(tls=tls, after_starttls="silent")
    result, _ = await probe_with(behaviour, ca_file, timeout=0.3)
    assert result.transient and result.reason == "timeout in TLS handshake"


async def test_hang_up_after_starttls_is_validation_failure(ca: trustme.CA, ca_file: str) -> None:
    tls = trustme_context(ca.issue_cert(MX))
    result, _ = await probe_with(SmtpBehaviour(tls=tls, after_starttls="close"), ca_file)
    assert result.result_type is ResultType.VALIDATION_FAILURE
    assert result.failure_reason_code is not None
    assert result.failure_reason_code.startswith("tls-handshake-failed")


async def test_ehlo_deferred_is_transient(ca: trustme.CA, ca_file: str) -> None:
    behaviour = SmtpBehaviour(tls=trustme_context(ca.issue_cert(MX)), ehlo_reply_code=421)
    result, record = await probe_with(behaviour, ca_file)
    assert result.transient and "421" in result.reason
    assert record.commands[-1] == "QUIT"


# --- MX patterns (RFC 8461 §4, §4.1) --------------------------------------------------------------


@pytest.mark.parametrize("patterns", [["*.example.test"], ["other.test", MX.upper()]])
async def test_mx_matching_a_pattern_passes(
    valid_server: LoopbackSmtpServer, ca_file: str, patterns: list[str]
) -> None:
    result = await prober(ca_file, valid_server.port).probe(MX, patterns)
    assert result.ok, result.reason


@pytest.mark.parametrize("patterns", [["*.other.test"], ["*.mx.example.test"], ["example.test"]])
async def test_mx_not_in_policy_fails_even_with_good_tls(
    valid_server: LoopbackSmtpServer, ca_file: str, patterns: list[str]
) -> None:
    p = prober(ca_file, valid_server.port)
    result = await p.probe(MX, patterns)
    assert result.result_type is ResultType.VALIDATION_FAILURE
    assert result.failure_reason_code == "mx-host-not-in-policy"
    assert (await p.probe(MX)).ok  # the cached network verdict itself is unchanged


# --- transient: not reportable (RFC 8460 §4.3.4) -------------------------------------------


async def test_silent_server_times_out_as_transient(ca_file: str) -> None:
    async with LoopbackSmtpServer(SmtpBehaviour(silent=True)) as srv:
        result = await prober(ca_file, srv.port, timeout=0.2).probe(MX)
    assert not result.ok and result.transient and result.result_type is None
    assert "timeout waiting for banner" in result.reason
    assert probe_failure_detail(result) is None


async def test_connection_refused_is_transient(ca_file: str) -> None:
    result = await prober(ca_file, free_port()).probe(MX)
    assert result.transient
    assert "connect" in result.reason


async def test_banner_refusal_is_transient(ca_file: str) -> None:
    result, _ = await probe_with(SmtpBehaviour(banner="554 5.3.2 no service"), ca_file)
    assert result.transient and "554" in result.reason


async def test_overlong_reply_line_is_transient(ca_file: str) -> None:
    result, _ = await probe_with(SmtpBehaviour(banner="220 " + "x" * 5000), ca_file)
    assert result.transient and result.reason == "SMTP line too long waiting for banner"


async def test_resolver_failure_and_empty_answer_are_transient(ca_file: str) -> None:
    async def broken(_host: str) -> list[str]:
        raise OSError("SERVFAIL")

    async def empty(_host: str) -> list[str]:
        return []

    assert (await prober(ca_file, 25, resolve=broken).probe(MX)).transient
    result = await prober(ca_file, 25, resolve=empty).probe(MX)
    assert result.transient and result.address is None


async def test_next_address_is_tried_when_connect_fails(
    valid_server: LoopbackSmtpServer, ca_file: str
) -> None:
    async def two(_host: str) -> list[str]:
        return ["::1", "127.0.0.1"]  # the server listens on 127.0.0.1 only

    result = await prober(ca_file, valid_server.port, resolve=two).probe(MX)
    assert result.ok and result.address == "127.0.0.1"


async def test_default_resolver_is_the_system_one(ca: trustme.CA, ca_file: str) -> None:
    """Without `resolve`, getaddrinfo: `localhost` (hosts file) is loopback only."""
    tls = trustme_context(ca.issue_cert("localhost"))
    async with LoopbackSmtpServer(SmtpBehaviour(tls=tls)) as srv:
        result = await prober(ca_file, srv.port, resolve=None).probe("localhost")
    assert result.ok, result.reason
    assert result.address == "127.0.0.1"


# --- concurrency, single flight, cache ---------------------------------------------------------


async def test_concurrency_is_bounded(ca_file: str) -> None:
    async with LoopbackSmtpServer(SmtpBehaviour(banner_delay=0.1)) as srv:
        p = prober(ca_file, srv.port, concurrency=2)
        results = await asyncio.gather(*(p.probe(f"mx{i}.example.test") for i in range(6)))
        assert srv.record.peak_active == 2
        assert srv.record.connections == 6
    assert all(r.result_type is ResultType.STARTTLS_NOT_SUPPORTED for r in results)


async def test_concurrent_probes_of_one_host_share_a_session(
    valid_server: LoopbackSmtpServer, ca_file: str
) -> None:
    p = prober(ca_file, valid_server.port)
    results = await asyncio.gather(*(p.probe(MX) for _ in range(5)))
    assert valid_server.record.connections == 1
    assert all(r.ok for r in results)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_cache_and_reprobe_interval(valid_server: LoopbackSmtpServer, ca_file: str) -> None:
    clock = FakeClock()
    p = prober(ca_file, valid_server.port, clock=clock, reprobe_interval=3600.0)
    first = await p.probe(MX)
    assert first.checked_at == clock.now
    clock.now += 3599
    assert await p.probe("MX.example.test.") == first  # same cache entry (normalised name)
    assert valid_server.record.connections == 1
    clock.now += 2
    second = await p.probe(MX)
    assert valid_server.record.connections == 2 and second.checked_at == clock.now
    await p.probe_fresh(MX)
    assert valid_server.record.connections == 3
    assert p.cached(MX) is not None


async def test_transient_results_are_retried_sooner(ca_file: str) -> None:
    clock = FakeClock()
    calls: list[str] = []

    async def refused(host: str) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    p = prober(ca_file, free_port(), clock=clock, resolve=refused, retry_interval=60.0)
    assert (await p.probe(MX)).transient
    clock.now += 59
    await p.probe(MX)
    assert len(calls) == 1
    clock.now += 2
    await p.probe(MX)
    assert len(calls) == 2


async def test_cache_is_bounded(valid_server: LoopbackSmtpServer, ca_file: str) -> None:
    p = prober(ca_file, valid_server.port, max_entries=2)
    for i in range(4):
        await p.probe(f"mx{i}.example.test")
    assert p.cached("mx0.example.test") is None
    assert p.cached("mx3.example.test") is not None


async def test_aclose_cancels_running_probes(ca_file: str) -> None:
    async with LoopbackSmtpServer(SmtpBehaviour(silent=True)) as srv:
        p = prober(ca_file, srv.port, timeout=30.0)
        task = asyncio.create_task(p.probe(MX))
        for _ in range(500):  # the probe is connected (not a fixed sleep: slow under load)
            if srv.record.connections:
                break
            await asyncio.sleep(0.01)
        assert srv.record.connections == 1
        await p.aclose()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- result shape -------------------------------------------------------------------------------


async def test_to_json_is_serialisable(ca: trustme.CA, ca_file: str) -> None:
    tls = trustme_context(ca.issue_cert("other.example.test"))
    result, _ = await probe_with(SmtpBehaviour(tls=tls), ca_file)
    data = result.to_json()
    decoded = json.loads(json.dumps(data))
    assert decoded["result_type"] == "certificate-host-mismatch"
    assert decoded["ok"] is False and decoded["transient"] is False
    assert decoded["cert_names"] == ["other.example.test"]
    assert str(decoded["cert_not_after"]).endswith("Z")


# --- pure parts: SMTP reply parser, certificate name rules, verify-error mapping ------------


async def parse_reply(data: bytes) -> tuple[int, list[str]]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await _read_reply(reader)


reply_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@given(
    code=st.integers(min_value=200, max_value=599),
    texts=st.lists(reply_text, min_size=1, max_size=8),
)
def test_reply_parser_roundtrip(code: int, texts: list[str]) -> None:
    wire = "".join(f"{code}-{t}\r\n" for t in texts[:-1]) + f"{code} {texts[-1]}\r\n"
    assert asyncio.run(parse_reply(wire.encode())) == (code, texts)


@given(st.binary(max_size=200))
def test_reply_parser_never_crashes(data: bytes) -> None:
    """Garbage is a transient failure (_Stop) or an incomplete read, never anything else."""
    try:
        code, lines = asyncio.run(parse_reply(data))
    except (_Stop, asyncio.IncompleteReadError):
        return
    assert 0 <= code <= 999 and lines


def test_reply_parser_rejects_garbage() -> None:
    with pytest.raises(_Stop) as info:
        asyncio.run(parse_reply(b"HTTP/1.1 400 Bad Request\r\n"))
    assert info.value.session.result_type is None
    assert "malformed SMTP reply" in info.value.session.reason


label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).filter(
    lambda t: t[0] != "-" and t[-1] != "-"
)
domain = st.lists(label, min_size=2, max_size=4).map(".".join)


@given(first=label, parent=domain, extra=label)
def test_wildcard_covers_exactly_one_label(first: str, parent: str, extra: str) -> None:
    assert matches_host((f"*.{parent}",), f"{first}.{parent}")
    assert matches_host((f"*.{parent}",), f"{first.upper()}.{parent}.")
    assert not matches_host((f"*.{parent}",), parent)
    assert not matches_host((f"*.{parent}",), f"{extra}.{first}.{parent}")
    assert matches_host((f"{first}.{parent}",), f"{first}.{parent}")
    assert not matches_host((f"{first}.{parent}",), f"{extra}x.{first}.{parent}")


@pytest.mark.parametrize(
    ("verify_code", "message", "expected"),
    [
        (10, "certificate has expired", ResultType.CERTIFICATE_EXPIRED),
        (62, "hostname mismatch", ResultType.CERTIFICATE_HOST_MISMATCH),
        (18, "self-signed certificate", ResultType.CERTIFICATE_NOT_TRUSTED),
        (20, "unable to get local issuer certificate", ResultType.CERTIFICATE_NOT_TRUSTED),
        (9, "certificate is not yet valid", ResultType.CERTIFICATE_NOT_TRUSTED),
        (47, "permitted subtree violation", ResultType.CERTIFICATE_NOT_TRUSTED),
    ],
)
def test_verify_error_mapping(verify_code: int, message: str, expected: ResultType) -> None:
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_code = verify_code
    err.verify_message = message
    assert classify_verify_error(err) == (expected, message)


# --- the `probe` command ---------------------------------------------------------------------


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    common = argparse.ArgumentParser(add_help=False)
    reader = argparse.ArgumentParser(add_help=False)
    reader.add_argument("--json", action="store_true")
    add_probe_parser(sub, common, reader)
    return parser.parse_args(["probe", *argv])


def cli_config(ca_file: str) -> Config:
    return Config(discovery=DiscoveryConfig(ca_file=ca_file))


async def test_cli_pass_json(
    valid_server: LoopbackSmtpServer, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(MX, "--address", "127.0.0.1", "--port", str(valid_server.port), "--json")
    assert args.handler is probe_command
    assert await run_probe(args, cli_config(ca_file)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["mx_host"] == MX and data["port"] == valid_server.port
    assert data["mx_patterns"] is None and data["exit_code"] == 0


async def test_cli_policy_patterns_fail_text(
    valid_server: LoopbackSmtpServer, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []

    async def patterns(domain: str) -> tuple[str, ...]:
        asked.append(domain)
        return ("*.other.test",)

    argv = [MX, "--address", "127.0.0.1", "--port", str(valid_server.port)]
    args = cli_args(*argv, "--policy-domain", "example.test")
    assert await run_probe(args, cli_config(ca_file), fetch_patterns=patterns) == 1
    out = capsys.readouterr().out
    assert asked == ["example.test"]
    assert out.startswith(f"FAIL {MX} [127.0.0.1]")
    assert "validation-failure" in out and "*.other.test" in out


async def test_cli_policy_fetch_failure_is_tempfail(
    ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def no_policy(domain: str) -> tuple[str, ...]:
        raise PolicyFetchError(f"https://mta-sts.{domain}/.well-known/mta-sts.txt: 404")

    args = cli_args(MX, "--address", "127.0.0.1", "--policy-domain", "example.test")
    assert await run_probe(args, cli_config(ca_file), fetch_patterns=no_policy) == 75
    assert "404" in capsys.readouterr().err


async def test_cli_certificate_failure_and_timeout_exit_codes(
    ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with LoopbackSmtpServer(SmtpBehaviour(tls=None)) as srv:
        args = cli_args(MX, "--address", "127.0.0.1", "--port", str(srv.port))
        assert await run_probe(args, cli_config(ca_file)) == 1
    assert "starttls-not-supported" in capsys.readouterr().out
    async with LoopbackSmtpServer(SmtpBehaviour(silent=True)) as srv:
        argv = [MX, "--address", "127.0.0.1", "--port", str(srv.port), "--timeout", "0.2"]
        assert await run_probe(cli_args(*argv), cli_config(ca_file)) == 75
    assert capsys.readouterr().out.startswith("UNKNOWN")


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback in this environment")
@pytest.mark.parametrize("literal", ["::1", "[::1]", "0:0::1"])
async def test_cli_ipv6_literal_is_connected_to(
    ca: trustme.CA, ca_file: str, capsys: pytest.CaptureFixture[str], literal: str
) -> None:
    """An IPv6 MX-HOST is connected to, as an IPv4 one is (it was refused as a host name)."""
    tls = trustme_context(ca.issue_cert(MX))
    async with LoopbackSmtpServer(SmtpBehaviour(tls=tls), host="::1") as srv:
        args = cli_args(literal, "--port", str(srv.port), "--json")
        assert await run_probe(args, cli_config(ca_file)) == 1  # the certificate names MX
    data = json.loads(capsys.readouterr().out)
    assert data["mx_host"] == "::1" and data["address"] == "::1"
    assert data["result_type"] == "certificate-host-mismatch"
    assert data["hint"].endswith("probe NAME --address ::1")
    assert srv.record.tls_established == 1


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback in this environment")
async def test_cli_a_name_whose_ipv4_refuses_is_probed_over_ipv6(
    ca: trustme.CA, ca_file: str, dns_server: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Postfix tries both families; the probe asked only A when the name had one."""
    tls = trustme_context(ca.issue_cert(MX))
    dns_server.set_a(MX, "127.0.0.2")
    dns_server.set_aaaa(MX, "::1")
    config = Config(
        discovery=DiscoveryConfig(ca_file=ca_file, nameservers=(dns_server.nameserver,))
    )
    with socket.socket() as refusing:  # bound, not listening: 127.0.0.2 on this port refuses
        refusing.bind(("127.0.0.2", 0))
        port = refusing.getsockname()[1]
        async with LoopbackSmtpServer(SmtpBehaviour(tls=tls), host="::1", port=port):
            assert await run_probe(cli_args(MX, "--port", str(port), "--json"), config) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["address"] == "::1"


async def test_cli_an_address_failing_the_name_check_says_to_use_address(
    ca: trustme.CA, ca_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mismatch verdict on a literal is right, but it ended there; the output now says
    how to check the certificate of a named MX at that address."""
    tls = trustme_context(ca.issue_cert(MX))
    async with LoopbackSmtpServer(SmtpBehaviour(tls=tls)) as srv:
        args = cli_args("127.0.0.1", "--port", str(srv.port))
        assert await run_probe(args, cli_config(ca_file)) == 1
        out = capsys.readouterr().out
        assert out.startswith("FAIL 127.0.0.1 [127.0.0.1]") and "certificate-host-mismatch" in out
        assert out.splitlines()[-1] == (
            "  hint: MX-HOST 127.0.0.1 is an address, so the certificate was checked against the"
            " address; to check it against the MX record's host name, give that name and this"
            " address: probe NAME --address 127.0.0.1"
        )
        args = cli_args(MX, "--address", "127.0.0.1", "--port", str(srv.port), "--json")
        assert await run_probe(args, cli_config(ca_file)) == 0  # what the hint says to run
        assert json.loads(capsys.readouterr().out)["hint"] is None
    async with LoopbackSmtpServer(SmtpBehaviour(tls=None)) as srv:  # another failure: no hint
        args = cli_args("127.0.0.1", "--port", str(srv.port))
        assert await run_probe(args, cli_config(ca_file)) == 1
        assert "hint" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mx_host", "usage"),
    [
        ("[::1]:25", "'[::1]:25' carries a port: give the port with --port ([::1] --port 25)"),
        ("[192.0.2.1]:2525", "give the port with --port ([192.0.2.1] --port 2525)"),
        ("mx.example.test:25", "give the port with --port (mx.example.test --port 25)"),
    ],
)
def test_cli_mx_host_with_a_port_says_to_use_port(
    ca_file: str, capsys: pytest.CaptureFixture[str], mx_host: str, usage: str
) -> None:
    """`[::1]:25` was refused as a bad DNS label."""
    assert probe_command(cli_args(mx_host), cli_config(ca_file)) == 64
    err = capsys.readouterr().err
    assert usage in err and "label" not in err


async def test_spellings_of_one_address_share_a_probe(ca_file: str) -> None:
    """The single-flight and cache key of an address literal is its canonical text."""
    async with LoopbackSmtpServer(SmtpBehaviour(banner_delay=0.1)) as srv:
        p = prober(ca_file, srv.port)
        spellings = ("127.0.0.1", "[127.0.0.1]", "[2001:DB8::25]", "2001:db8:0::25")
        results = await asyncio.gather(*(p.probe(s) for s in spellings))
        assert srv.record.connections == 2  # `loopback` answers for both addresses
    assert [r.mx_host for r in results] == ["127.0.0.1"] * 2 + ["2001:db8::25"] * 2
    assert p.cached("2001:0db8::0025") is results[2]


def test_cli_bad_host_is_usage_error(ca_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert probe_command(cli_args("bad host"), cli_config(ca_file)) == 64
    assert "invalid MX host name" in capsys.readouterr().err


POLICY = "version: STSv1\nmode: testing\nmx: {mx}\nmax_age: 86400\n"


@pytest.mark.parametrize(("pattern", "exit_code"), [("*.example.test", 0), ("mx.other.test", 1)])
async def test_cli_end_to_end_with_discovery(
    sts_world: StsWorld,
    trust_ca: trustme.CA,
    capsys: pytest.CaptureFixture[str],
    pattern: str,
    exit_code: int,
) -> None:
    """RFC 8461 §4 through the daemon's own DNS + HTTPS discovery; the MX address from the same
    DNS."""
    sts_world.publish("example.test", POLICY.format(mx=pattern))
    sts_world.dns.set_a(MX, "127.0.0.1")
    config = Config(
        discovery=DiscoveryConfig(
            nameservers=(sts_world.dns.nameserver,),
            dns_timeout=1.0,
            fetch_timeout=2.0,
            ca_file=sts_world.https.ca_pem_path,
            https_port=sts_world.https.port,
        )
    )
    tls = trustme_context(trust_ca.issue_cert(MX))
    async with LoopbackSmtpServer(SmtpBehaviour(tls=tls)) as srv:
        argv = [MX, "--port", str(srv.port), "--policy-domain", "example.test", "--json"]
        assert await run_probe(cli_args(*argv), config) == exit_code
    data = json.loads(capsys.readouterr().out)
    assert data["mx_patterns"] == [pattern] and data["address"] == "127.0.0.1"


@pytest.mark.parametrize("name", ["client\r\nRCPT TO:<x@y>", "bad name", "ümlaut.test"])
def test_ehlo_name_cannot_inject_commands(name: str) -> None:
    with pytest.raises(ConfigError):
        MxProber(ehlo_name=name)


def test_unusable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA file"):
        MxProber(ca_file=str(tmp_path / "missing.pem"))


def test_certificate_details_fall_back_to_openssls_decoding() -> None:
    """A leaf cryptography refuses but OpenSSL verified still yields names and expiry."""
    decoded = {
        "subject": ((("commonName", "mx.example.test"),),),
        "subjectAltName": (("DNS", "MX.example.test"), ("IP Address", "192.0.2.1")),
        "notAfter": "Jan  5 09:34:43 2030 GMT",
    }
    info = describe_certificate(b"not DER", decoded)
    assert info is not None
    assert info.dns_names == ("mx.example.test",) and info.common_name == MX
    assert info.not_after == dt.datetime(2030, 1, 5, 9, 34, 43, tzinfo=dt.UTC)
    assert describe_certificate(b"not DER", {}) is None


async def test_a_crashing_probe_is_logged_and_transient(
    ca_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def buggy(_host: str) -> list[str]:
        return [12345]  # type: ignore[list-item]  # not a str: the connect step raises TypeError

    result = await prober(ca_file, free_port(), resolve=buggy).probe(MX)
    assert result.transient and result.reason == "internal error: TypeError"
    assert "event=probe-crashed mx=mx.example.test" in caplog.text
