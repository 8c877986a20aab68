"""The loopback test servers behave as the other tests assume (plain dnspython/ssl clients)."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import trustme

from support.dns_server import DnsServer, a, txt
from support.https_server import HttpsServer, Site, wait_for


def ask(server: DnsServer, name: str, rtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    host, port = server.address
    if tcp:
        return dns.query.tcp(query, host, port=port, timeout=2)
    return dns.query.udp(query, host, port=port, timeout=2)


def test_dns_udp_and_tcp_share_the_port(dns_server: DnsServer) -> None:
    dns_server.set_txt("t.test", ("a", "b"), "c", ttl=77)
    for tcp in (False, True):
        response = ask(dns_server, "t.test", "TXT", tcp)
        [rrset] = response.answer
        assert sorted(rd.strings for rd in rrset) == [(b"a", b"b"), (b"c",)]
        assert rrset.ttl == 77
    assert dns_server.query_count("T.test.", "txt") == 2
    assert [q.transport for q in dns_server.queries] == ["udp", "tcp"]
    host, port = dns_server.address
    assert host == "127.0.0.1" and dns_server.nameserver == f"127.0.0.1:{port}"


def test_dns_nxdomain_nodata_and_soa(dns_server: DnsServer) -> None:
    dns_server.negative_ttl = 30
    dns_server.set_a("exists.test", "127.0.0.1")
    nx = ask(dns_server, "missing.test", "A")
    nodata = ask(dns_server, "exists.test", "TXT")
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    for response in (nx, nodata):
        [soa] = response.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 30
    assert nodata.flags & dns.flags.RA


def test_dns_cname_chain_in_answer(dns_server: DnsServer) -> None:
    dns_server.set_cname("a.test", "b.test")
    dns_server.set_cname("b.test", "c.test")
    dns_server.set_txt("c.test", "end")
    response = ask(dns_server, "a.test", "TXT")
    assert [str(r.name) for r in response.answer] == ["a.test.", "b.test.", "c.test."]
    assert ask(dns_server, "a.test", "CNAME").answer[0][0].target.to_text() == "b.test."
    dns_server.set_cname("loop.test", "loop.test")
    assert ask(dns_server, "loop.test", "TXT").rcode() == dns.rcode.SERVFAIL


def test_dns_failures_per_name_and_type(dns_server: DnsServer) -> None:
    dns_server.set_txt("f.test", "x")
    dns_server.fail("f.test", "refused", "MX")
    assert ask(dns_server, "f.test", "MX").rcode() == dns.rcode.REFUSED
    assert ask(dns_server, "f.test", "TXT").rcode() == dns.rcode.NOERROR
    dns_server.fail("f.test", "servfail")
    assert ask(dns_server, "f.test", "TXT").rcode() == dns.rcode.SERVFAIL
    dns_server.fail("f.test", "drop")
    with pytest.raises(dns.exception.Timeout):
        host, port = dns_server.address
        dns.query.udp(dns.message.make_query("f.test", "A"), host, timeout=0.3, port=port)
    dns_server.set("f.test", txt("back"))
    assert ask(dns_server, "f.test", "TXT").answer[0][0].strings == (b"back",)


def test_dns_delay_holds_only_that_name(dns_server: DnsServer) -> None:
    dns_server.set_a("slow.test", "127.0.0.1")
    dns_server.set_a("fast.test", "127.0.0.1")
    dns_server.delay("slow.test", 0.4)
    results: dict[str, float] = {}

    def timed(name: str) -> None:
        start = time.monotonic()
        ask(dns_server, name, "A")
        results[name] = time.monotonic() - start

    slow = threading.Thread(target=timed, args=("slow.test",))
    slow.start()
    timed("fast.test")
    slow.join()
    assert results["fast.test"] < 0.2 <= 0.35 < results["slow.test"]


def test_dns_zone_callback_serves_many_names(dns_server: DnsServer) -> None:
    def zone(name: str) -> list[object] | None:
        if name.startswith("_mta-sts.d"):
            return [txt(f"v=STSv1; id={name.split('.')[1]}", ttl=60)]
        return [a("127.0.0.1")] if name.startswith("mta-sts.d") else None

    dns_server.zone_callback = zone  # type: ignore[assignment]
    dns_server.set_txt("_mta-sts.d5.test", "override")
    assert ask(dns_server, "_mta-sts.d7.test", "TXT").answer[0][0].strings == (b"v=STSv1; id=d7",)
    assert ask(dns_server, "_mta-sts.d5.test", "TXT").answer[0][0].strings == (b"override",)
    assert ask(dns_server, "mta-sts.d99999.test", "A").answer[0][0].address == "127.0.0.1"
    assert ask(dns_server, "other.test", "A").rcode() == dns.rcode.NXDOMAIN


def test_dns_truncates_large_udp_answers(dns_server: DnsServer) -> None:
    dns_server.set_txt("big.test", *[chr(65 + i) * 200 for i in range(10)])
    assert ask(dns_server, "big.test", "TXT").flags & dns.flags.TC
    assert len(ask(dns_server, "big.test", "TXT", tcp=True).answer[0]) == 10


def test_dns_remove_and_reset(dns_server: DnsServer) -> None:
    dns_server.set_a("r.test", "127.0.0.1")
    ask(dns_server, "r.test", "A")
    dns_server.remove("r.test")
    assert ask(dns_server, "r.test", "A").rcode() == dns.rcode.NXDOMAIN
    dns_server.reset_counts()
    assert dns_server.query_count("r.test", "A") == 0 and dns_server.queries == []


def tls_get(server: HttpsServer, sni: str, path: str = "/.well-known/mta-sts.txt") -> bytes:
    ctx = ssl.create_default_context(cafile=server.ca_pem_path)
    ctx.hostname_checks_common_name = False
    with (
        socket.create_connection(server.address, timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as sock,
    ):
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\nX-Test: 1\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_https_records_requests_and_sni(https_server: HttpsServer) -> None:
    https_server.set_policy("a.test", "hello", headers=[("X-Extra", "1")])
    reply = tls_get(https_server, "mta-sts.a.test")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"hello"
    assert b"Content-Type: text/plain" in head and b"X-Extra: 1" in head
    [request] = https_server.requests
    assert (request.sni, request.host, request.path) == (
        "mta-sts.a.test",
        "mta-sts.a.test",
        "/.well-known/mta-sts.txt",
    )
    assert request.header("x-test") == "1"
    assert https_server.request_count("mta-sts.a.test") == 1
    assert b"404" in tls_get(https_server, "mta-sts.a.test", "/other").split(b"\r\n")[0]


@pytest.mark.parametrize(
    ("cert", "names"),
    [
        ("expired", None),
        ("self-signed", None),
        ("untrusted", None),
        ("cn-only", None),
        ("wrong-name", None),
        ("valid", ("mta*.b.test",)),
    ],
)
def test_https_bad_certificates_fail_plain_clients(
    https_server: HttpsServer, cert: str, names: tuple[str, ...] | None
) -> None:
    https_server.set_policy("b.test", "x", cert=cert, cert_names=names)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_get(https_server, "mta-sts.b.test")
    assert https_server.requests == []
    assert wait_for(lambda: len(https_server.tls_failures) == 1)
    assert https_server.tls_failures[0].sni == "mta-sts.b.test"


def test_https_wildcard_and_unknown_names(https_server: HttpsServer) -> None:
    https_server.set_policy("w.test", "ok", cert="wildcard")
    assert tls_get(https_server, "mta-sts.w.test").endswith(b"ok")
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        tls_get(https_server, "mta-sts.unknown.test")


def test_https_chunked_drip_and_callback(trust_ca: trustme.CA) -> None:
    def sites(host: str) -> Site | None:
        return Site(body=host.encode(), framing="chunked", drip_interval=0.01, drip_size=4)

    with HttpsServer(trust_ca, site_callback=sites) as server:
        start = time.monotonic()
        reply = tls_get(server, "mta-sts.d123.test")
        assert time.monotonic() - start >= 0.04
        assert b"Transfer-Encoding: chunked" in reply
        assert reply.endswith(b"\r\n0\r\n\r\n") and b"\r\n4\r\nmta-\r\n" in reply


def test_https_concurrent_requests(https_server: HttpsServer) -> None:
    https_server.set_policy("slow.test", "s", delay=0.3)
    https_server.set_policy("fast.test", "f")
    slow = threading.Thread(target=tls_get, args=(https_server, "mta-sts.slow.test"))
    slow.start()
    time.sleep(0.05)
    start = time.monotonic()
    assert tls_get(https_server, "mta-sts.fast.test").endswith(b"f")
    assert time.monotonic() - start < 0.25
    slow.join()
