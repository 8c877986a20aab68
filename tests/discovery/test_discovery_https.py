"""discovery: HTTPS policy fetch via loopback HTTPS + DNS (RFC 8461 §3.2, §3.3, §7;
docs/conformance.md: STS-8.2-delegation)."""

from __future__ import annotations

import asyncio
import importlib.abc
import socket
import ssl
import sys
import time

import pytest

from conftest import StsWorld
from mta_sts_policyd import __version__
from mta_sts_policyd.discovery.client import MAX_BODY, Discovery
from mta_sts_policyd.errors import PolicyFetchError, ResultType
from mta_sts_policyd.net.tls import client_context
from mta_sts_policyd.sts import Mode, TxtRecord
from support.https_server import HttpsServer, wait_for

D = "example.test"
HOST = f"mta-sts.{D}"
POLICY = b"version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
FETCH = ResultType.STS_POLICY_FETCH_ERROR
INVALID = ResultType.STS_POLICY_INVALID
WEBPKI = ResultType.STS_WEBPKI_INVALID


def padded(size: int) -> bytes:
    """A valid policy of exactly `size` bytes (padding in ignored extension fields)."""
    body = POLICY
    while len(body) < size:
        room = min(size - len(body), 1000)
        body += b"\n" if room < 5 else b"x: " + b"a" * (room - 4) + b"\n"
    assert len(body) == size
    return body


async def fetch_error(discovery: Discovery, domain: str = D) -> PolicyFetchError:
    with pytest.raises(PolicyFetchError) as info:
        await discovery.fetch_policy(domain)
    return info.value


async def test_url_host_and_result(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    sts_world.publish(D, POLICY)
    result = await discovery.fetch_policy(D)
    assert result.url == f"https://{HOST}/.well-known/mta-sts.txt"
    assert (result.status, result.content_type, result.body) == (200, "text/plain", POLICY)
    assert result.policy.mode is Mode.ENFORCE and result.policy.mx == ("mail.example.test",)
    [request] = https_server.requests
    assert (request.method, request.path, request.host) == ("GET", "/.well-known/mta-sts.txt", HOST)


async def test_a_fetch_does_not_search_for_missing_modules(
    sts_world: StsWorld, discovery: Discovery
) -> None:
    """httpcore imports sniffio inside every lock: without it each import searches sys.path."""
    sts_world.publish(D, POLICY)
    await discovery.fetch_policy(D)
    searches: list[str] = []

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *_: object) -> None:
            searches.append(name)

    sys.meta_path.insert(0, Spy())
    try:
        await discovery.fetch_policy(D)
    finally:
        sys.meta_path.pop(0)
    assert searches == []


async def test_idn_domain_in_a_label_form(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    sts_world.publish("xn--bcher-kva.test", POLICY)
    result = await discovery.fetch_policy("bücher.test")
    assert result.url == "https://mta-sts.xn--bcher-kva.test/.well-known/mta-sts.txt"
    [request] = https_server.requests
    assert request.sni == request.host == "mta-sts.xn--bcher-kva.test"
    assert sts_world.dns.query_count("mta-sts.xn--bcher-kva.test", "A") == 1


async def test_sni_is_the_policy_host(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    sts_world.publish(D, POLICY)
    await discovery.fetch_policy(D)
    assert [r.sni for r in https_server.requests] == [HOST]


@pytest.mark.parametrize(
    ("cert", "names", "detail"),
    [
        ("self-signed", None, "self-signed"),
        ("expired", None, "expired"),
        ("untrusted", None, "unable to get local issuer"),
        ("wrong-name", None, "Hostname mismatch"),  # RFC 8461 §3.3: only example.test
        ("none", None, "no certificate"),
        ("valid", ("mta*.example.test",), "Hostname mismatch"),  # RFC 8461 §3.3: partial wildcard
    ],
)
async def test_bad_certificates_are_webpki_invalid(
    sts_world: StsWorld,
    discovery: Discovery,
    https_server: HttpsServer,
    cert: str,
    names: tuple[str, ...] | None,
    detail: str,
) -> None:
    sts_world.publish(D, POLICY, cert=cert, cert_names=names)
    error = await fetch_error(discovery)
    assert error.result_type is WEBPKI
    assert detail in error.reason
    assert https_server.requests == []


async def test_cn_only_certificate_rejected(sts_world: StsWorld, discovery: Discovery) -> None:
    """Python's ssl falls back to the CN by default; RFC 8461 §3.3 wants the DNS-ID only."""
    sts_world.publish(D, POLICY, cert="cn-only")
    assert (await fetch_error(discovery)).result_type is WEBPKI
    assert client_context().hostname_checks_common_name is False


async def test_wildcard_certificate_accepted(sts_world: StsWorld, discovery: Discovery) -> None:
    sts_world.publish(D, POLICY, cert="wildcard")
    assert (await discovery.fetch_policy(D)).body == POLICY


async def test_no_revocation_information_needed(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    """The test leaves carry no OCSP/CRL pointers; revocation checking is optional (MAY)."""
    sts_world.publish(D, POLICY)
    pem = https_server.certs.chain_pem("valid", (HOST,))
    assert b"BEGIN CERTIFICATE" in pem
    assert (await discovery.fetch_policy(D)).status == 200


async def test_cname_delegation_needs_cert_for_user_domain(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    sts_world.dns.set_cname("_mta-sts.user.test", "_mta-sts.provider.test")
    sts_world.publish("provider.test", POLICY)
    sts_world.publish("user.test", POLICY, txt=None, cert_names=("mta-sts.provider.test",))
    assert (await discovery.lookup_txt("user.test")).records == ("v=STSv1; id=1",)
    error = await fetch_error(discovery, "user.test")
    assert error.result_type is WEBPKI
    assert wait_for(lambda: len(https_server.tls_failures) == 1)
    assert https_server.tls_failures[0].sni == "mta-sts.user.test"
    assert https_server.request_count("mta-sts.provider.test") == 0


@pytest.mark.parametrize("status", [201, 204, 304, 404, 500, 503])
async def test_only_200_is_accepted(sts_world: StsWorld, discovery: Discovery, status: int) -> None:
    sts_world.publish(D, POLICY, status=status)
    error = await fetch_error(discovery)
    assert error.result_type is FETCH
    assert f"HTTP {status}" in error.reason


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_not_followed(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer, status: int
) -> None:
    target = "https://mta-sts.elsewhere.test/.well-known/mta-sts.txt"
    sts_world.publish("elsewhere.test", POLICY)
    sts_world.publish(D, POLICY, status=status, location=target)
    error = await fetch_error(discovery)
    assert error.result_type is FETCH
    assert f"HTTP {status} redirect to {target}" in error.reason
    assert "not followed" in error.reason
    assert https_server.request_count("mta-sts.elsewhere.test") == 0
    assert https_server.request_count(HOST) == 1


async def test_no_http_caching(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    caching = [("Cache-Control", "max-age=86400"), ("ETag", '"v1"'), ("Last-Modified", "x")]
    site = sts_world.publish(D, POLICY, headers=caching)
    await discovery.fetch_policy(D)
    assert site is not None
    site.body = POLICY.replace(b"86400", b"600")
    assert (await discovery.fetch_policy(D)).policy.max_age == 600
    assert https_server.request_count(HOST) == 2
    for request in https_server.requests:
        assert request.header("If-None-Match") is None
        assert request.header("If-Modified-Since") is None
        assert request.header("Cache-Control") == "no-cache"


async def test_request_headers(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    sts_world.publish(D, POLICY)
    await discovery.fetch_policy(D)
    [request] = https_server.requests
    assert request.header("User-Agent") == f"mta-sts-policyd/{__version__}"
    assert request.header("Accept-Encoding") == "identity"


@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream", "text/plain2"])
async def test_wrong_content_type_is_policy_invalid(
    sts_world: StsWorld, discovery: Discovery, content_type: str
) -> None:
    sts_world.publish(D, POLICY, content_type=content_type)
    error = await fetch_error(discovery)
    assert error.result_type is INVALID
    assert content_type in error.reason


async def test_missing_content_type_is_policy_invalid(
    sts_world: StsWorld, discovery: Discovery
) -> None:
    sts_world.publish(D, POLICY, content_type=None)
    assert (await fetch_error(discovery)).result_type is INVALID


@pytest.mark.parametrize(
    "content_type",
    [
        "TEXT/PLAIN; charset=utf-8; foo=bar",
        "Text/Plain; charset=UTF-8",
        "text/plain;charset=iso-8859-1",
    ],
)
async def test_text_plain_with_parameters_accepted(
    sts_world: StsWorld, discovery: Discovery, content_type: str
) -> None:
    sts_world.publish(D, POLICY, content_type=content_type)
    assert (await discovery.fetch_policy(D)).content_type == content_type


async def test_content_encoding_refused(sts_world: StsWorld, discovery: Discovery) -> None:
    sts_world.publish(D, POLICY, headers=[("Content-Encoding", "gzip")])
    assert (await fetch_error(discovery)).result_type is INVALID


async def test_body_not_utf8_is_policy_invalid(sts_world: StsWorld, discovery: Discovery) -> None:
    sts_world.publish(D, POLICY + b"x: caf\xe9\n", content_type="text/plain; charset=iso-8859-1")
    error = await fetch_error(discovery)
    assert error.result_type is INVALID
    assert "UTF-8" in error.reason


async def test_syntax_error_is_policy_invalid_with_line(
    sts_world: StsWorld, discovery: Discovery
) -> None:
    sts_world.publish(D, b"version: STSv1\nmode: enforce\nmax_age: 86400\n")  # no mx
    error = await fetch_error(discovery)
    assert error.result_type is INVALID
    assert error.reason.startswith("invalid policy: ")


@pytest.mark.parametrize("framing", ["length", "close", "chunked"])
async def test_exactly_64_kib_accepted(
    sts_world: StsWorld, discovery: Discovery, framing: str
) -> None:
    sts_world.publish(D, padded(MAX_BODY), framing=framing)
    assert len((await discovery.fetch_policy(D)).body) == MAX_BODY


@pytest.mark.parametrize("framing", ["length", "close", "chunked"])
@pytest.mark.parametrize("size", [MAX_BODY + 1, 70_000])
async def test_oversized_body_fails(
    sts_world: StsWorld, discovery: Discovery, framing: str, size: int
) -> None:
    sts_world.publish(D, padded(size), framing=framing)
    error = await fetch_error(discovery)
    assert error.result_type is FETCH
    assert str(MAX_BODY) in error.reason


async def test_cap_counts_bytes_not_announced_length(
    sts_world: StsWorld, discovery: Discovery
) -> None:
    """A small announced length cannot smuggle more: httpx stops at Content-Length."""
    sts_world.publish(D, padded(70_000), content_length=len(POLICY))
    assert (await discovery.fetch_policy(D)).body == POLICY


async def test_slow_drip_body_times_out(sts_world: StsWorld) -> None:
    sts_world.publish(D, POLICY, drip_interval=0.05, drip_size=1)  # ~3.4 s in total
    async with sts_world.discovery(fetch_timeout=0.5) as client:
        start = time.monotonic()
        error = await fetch_error(client)
        assert time.monotonic() - start < 1.5
    assert error.result_type is FETCH
    assert "within 0.5 s" in error.reason


@pytest.mark.fault
async def test_fetch_timeout_is_a_hard_limit_even_when_the_tls_close_stalls(
    sts_world: StsWorld,
) -> None:
    """Issue 11 item 5: headers, then silence (no body, no close_notify, no FIN): the TLS close
    after the deadline waited for the peer up to asyncio's 30 s SSL shutdown timeout."""
    sts_world.publish(D, POLICY, stall_after_headers=40)
    async with sts_world.discovery(fetch_timeout=1.0) as client:
        start = time.monotonic()
        error = await fetch_error(client)
        assert time.monotonic() - start < 1.5
    assert error.result_type is FETCH
    assert "within 1 s" in error.reason


@pytest.mark.fault
async def test_an_unexpected_library_error_is_a_fetch_error(
    sts_world: StsWorld, discovery: Discovery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 item 2: every library exception is translated here, not only the known
    families (a bare EOFError escaped the DNS side before)."""
    sts_world.publish(D, POLICY)

    async def broken(self: object, stream: object, url: str) -> tuple[int, str, bytes]:
        raise EOFError

    monkeypatch.setattr("mta_sts_policyd.discovery.policy_fetch.PolicyFetcher._get", broken)
    error = await fetch_error(discovery)
    assert error.result_type is FETCH and "EOFError" in error.reason


async def test_slow_headers_time_out(sts_world: StsWorld) -> None:
    sts_world.publish(D, POLICY, delay=3)
    async with sts_world.discovery(fetch_timeout=0.3) as client:
        assert (await fetch_error(client)).result_type is FETCH


def test_timeout_capped_at_one_minute(sts_world: StsWorld) -> None:
    client = sts_world.discovery(fetch_timeout=600)
    assert client._fetcher.timeout == 60


async def test_one_attempt_per_fetch(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    """No hidden retries: the 5-minute back-off (lookup.py) counts real attempts."""
    sts_world.publish(D, POLICY, status=500)
    await fetch_error(discovery)
    assert https_server.request_count(HOST) == 1


async def test_valid_txt_but_failed_fetch_raises(sts_world: StsWorld, discovery: Discovery) -> None:
    sts_world.publish(D, POLICY, status=500)
    assert isinstance((await discovery.lookup_txt(D)).result, TxtRecord)
    assert (await fetch_error(discovery)).result_type is FETCH


async def test_policy_host_dns_failure_is_fetch_error(
    sts_world: StsWorld, discovery: Discovery
) -> None:
    sts_world.publish(D, POLICY)
    sts_world.dns.fail(HOST, "servfail")
    error = await fetch_error(discovery)
    assert error.result_type is FETCH and "SERVFAIL" in error.reason


async def test_policy_host_aaaa_failure_does_not_matter_with_a(
    sts_world: StsWorld, discovery: Discovery
) -> None:
    sts_world.publish(D, POLICY)
    sts_world.dns.fail(HOST, "servfail", "AAAA")
    assert (await discovery.fetch_policy(D)).status == 200


async def test_policy_host_without_address(sts_world: StsWorld, discovery: Discovery) -> None:
    sts_world.publish(D, POLICY)
    sts_world.dns.remove(HOST)
    error = await fetch_error(discovery)
    assert error.result_type is FETCH and "no A or AAAA" in error.reason


async def test_connection_refused(sts_world: StsWorld) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sts_world.publish(D, POLICY)
    async with sts_world.discovery(https_port=closed_port) as client:
        error = await fetch_error(client)
    assert error.result_type is FETCH and "cannot connect" in error.reason


async def test_tls12_only_server_works(trust_ca: object, sts_world: StsWorld) -> None:
    tls12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    with HttpsServer(trust_ca, tls_versions=tls12) as server:  # type: ignore[arg-type]
        server.set_policy(D, POLICY)
        sts_world.publish(D, None)
        async with sts_world.discovery(https_port=server.port, ca_file=server.ca_pem_path) as c:
            assert (await c.fetch_policy(D)).status == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_tls11_server_refused(trust_ca: object, sts_world: StsWorld) -> None:
    tls11 = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    with HttpsServer(trust_ca, tls_versions=tls11) as server:  # type: ignore[arg-type]
        server.set_policy(D, POLICY)
        sts_world.publish(D, None)
        async with sts_world.discovery(https_port=server.port, ca_file=server.ca_pem_path) as c:
            error = await fetch_error(c)
        assert server.requests == []
    assert error.result_type is FETCH
    assert client_context().minimum_version >= ssl.TLSVersion.TLSv1_2


async def test_ipv6_policy_host(trust_ca: object, sts_world: StsWorld) -> None:
    try:
        server = HttpsServer(trust_ca, "::1")  # type: ignore[arg-type]
        server.start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    with server:
        server.set_policy(D, POLICY)
        sts_world.dns.set_aaaa(HOST, "::1")
        async with sts_world.discovery(https_port=server.port, ca_file=server.ca_pem_path) as c:
            assert (await c.fetch_policy(D)).status == 200
        assert [r.sni for r in server.requests] == [HOST]


async def test_concurrent_fetches_do_not_share_connections(
    sts_world: StsWorld, discovery: Discovery, https_server: HttpsServer
) -> None:
    domains = [f"d{i}.test" for i in range(20)]
    for domain in domains:
        sts_world.publish(domain, POLICY.replace(b"86400", str(len(domain)).encode()))
    results = await asyncio.gather(*(discovery.fetch_policy(d) for d in domains))
    assert [r.url for r in results] == [
        f"https://mta-sts.{d}/.well-known/mta-sts.txt" for d in domains
    ]
    assert all(r.sni == r.host for r in https_server.requests)
    assert len(https_server.requests) == 20


async def test_announced_oversize_fails_without_reading(
    sts_world: StsWorld, discovery: Discovery
) -> None:
    sts_world.publish(D, POLICY, content_length=MAX_BODY + 1)
    start = time.monotonic()
    error = await fetch_error(discovery)
    assert time.monotonic() - start < 1.0  # did not wait for the announced bytes
    assert error.result_type is FETCH and "Content-Length 65537" in error.reason
