"""discovery: `_mta-sts` TXT and MX lookups via loopback DNS (RFC 8461 §3.1)."""

from __future__ import annotations

import time
from pathlib import Path

import dns.asyncresolver
import pytest

from mta_sts_policyd.discovery.client import Discovery
from mta_sts_policyd.errors import ConfigError, DiscoveryError, DnsLookupError
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.sts import TxtAbsent, TxtInvalid, TxtRecord
from support.dns_server import DnsServer

D = "example.test"
Q = f"_mta-sts.{D}"


async def test_queries_exact_name_once(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, "v=STSv1; id=abc")
    result = await discovery.lookup_txt(D)
    assert result.result == TxtRecord(id="abc")
    assert result.records == ("v=STSv1; id=abc",)
    assert dns_server.query_count(Q, "TXT") == 1
    assert [q.name for q in dns_server.queries] == [Q]


async def test_multi_string_rr_concatenated(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, ("v=STSv1; id=20", "26"))
    result = await discovery.lookup_txt(D)
    assert result.result == TxtRecord(id="2026")
    assert result.records == ("v=STSv1; id=2026",)


async def test_cname_chain_followed_with_smallest_ttl(
    discovery: Discovery, dns_server: DnsServer
) -> None:
    dns_server.set_cname("_mta-sts.user.test", "_mta-sts.hop.test", ttl=120)
    dns_server.set_cname("_mta-sts.hop.test", "_mta-sts.provider.test", ttl=50)
    dns_server.set_txt("_mta-sts.provider.test", "v=STSv1; id=prov1", ttl=300)
    result = await discovery.lookup_txt("user.test")
    assert result.result == TxtRecord(id="prov1")
    assert result.ttl == 50
    assert dns_server.query_count("_mta-sts.user.test", "TXT") == 1


async def test_positive_ttl_is_the_rrset_ttl(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, "v=STSv1; id=1", ttl=1234)
    assert (await discovery.lookup_txt(D)).ttl == 1234


async def test_spf_record_beside_sts_record(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, "v=spf1 -all", "v=STSv1; id=A1")
    result = await discovery.lookup_txt(D)
    assert result.result == TxtRecord(id="A1")
    assert sorted(result.records) == ["v=STSv1; id=A1", "v=spf1 -all"]


async def test_nxdomain_is_absent_with_negative_ttl(
    discovery: Discovery, dns_server: DnsServer
) -> None:
    dns_server.negative_ttl = 42
    result = await discovery.lookup_txt(D)
    assert isinstance(result.result, TxtAbsent)
    assert "NXDOMAIN" in result.result.reason
    assert result.ttl == 42
    assert result.records == ()


async def test_nodata_is_absent(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_a(Q, "127.0.0.1")
    result = await discovery.lookup_txt(D)
    assert isinstance(result.result, TxtAbsent)
    assert result.ttl == dns_server.negative_ttl


async def test_cname_to_nxdomain_is_absent(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_cname(Q, "_mta-sts.gone.test")
    assert isinstance((await discovery.lookup_txt(D)).result, TxtAbsent)


async def test_two_sts_records_no_live_policy(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, "v=STSv1; id=one", "v=STSv1; id=two")
    result = await discovery.lookup_txt(D)
    assert isinstance(result.result, TxtInvalid)
    assert len(result.records) == 2


@pytest.mark.parametrize("record", ["v=STSv1; id=abc-1", "v=STSv1; id=" + "a" * 33])
async def test_invalid_id(discovery: Discovery, dns_server: DnsServer, record: str) -> None:
    dns_server.set_txt(Q, record)
    assert isinstance((await discovery.lookup_txt(D)).result, TxtInvalid)


async def test_missing_id(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, "v=STSv1;")
    assert isinstance((await discovery.lookup_txt(D)).result, TxtInvalid)
    dns_server.set_txt(Q, "v=STSv1")  # not even a candidate without ";" (RFC 8461 §3.1)
    assert not isinstance((await discovery.lookup_txt(D)).result, TxtRecord)


async def test_extension_ignored(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, "v=STSv1; id=X; ext=1")
    assert (await discovery.lookup_txt(D)).result == TxtRecord(id="X", extensions=(("ext", "1"),))


async def test_space_before_semicolon(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, "v=STSv1 ; id=X")
    result = (await discovery.lookup_txt(D)).result
    assert isinstance(result, TxtRecord) and result.id == "X"


async def test_non_ascii_bytes_reach_the_parser(
    discovery: Discovery, dns_server: DnsServer
) -> None:
    dns_server.set_txt(Q, b"v=STSv1; id=abc\xc3\xa9")
    result = await discovery.lookup_txt(D)
    assert isinstance(result.result, TxtInvalid)
    assert result.records == ("v=STSv1; id=abc\\xc3\\xa9",)


async def test_large_rrset_retried_over_tcp(discovery: Discovery, dns_server: DnsServer) -> None:
    fillers = [f"filler-{i}-" + "x" * 200 for i in range(10)]
    dns_server.set_txt(Q, *fillers, "v=STSv1; id=big")
    assert (await discovery.lookup_txt(D)).result == TxtRecord(id="big")
    assert {q.transport for q in dns_server.queries} == {"udp", "tcp"}


@pytest.mark.parametrize("failure", ["servfail", "refused"])
async def test_server_failure_raises(
    discovery: Discovery, dns_server: DnsServer, failure: str
) -> None:
    dns_server.fail(Q, failure)  # type: ignore[arg-type]
    with pytest.raises(DnsLookupError) as info:
        await discovery.lookup_txt(D)
    assert failure.upper() in info.value.reason
    assert Q in info.value.reason


async def test_silence_times_out(dns_server: DnsServer) -> None:
    dns_server.fail(Q, "drop")
    async with Discovery(nameservers=[dns_server.nameserver], dns_timeout=0.3) as client:
        start = time.monotonic()
        with pytest.raises(DnsLookupError, match=r"no DNS answer within 0\.3 s"):
            await client.lookup_txt(D)
        assert time.monotonic() - start < 2.0


async def test_failure_is_not_absence(discovery: Discovery, dns_server: DnsServer) -> None:
    """RFC 8461 §3.3: "could not find out" must be an exception, never TxtAbsent (the cache relies
    on it)."""
    dns_server.fail(Q, "servfail")
    with pytest.raises(DiscoveryError):
        await discovery.lookup_txt(D)


async def test_idn_sent_as_a_label(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_txt("_mta-sts.xn--bcher-kva.test", "v=STSv1; id=idn")
    assert (await discovery.lookup_txt("xn--bcher-kva.test")).result == TxtRecord(id="idn")
    assert (await discovery.lookup_txt("Bücher.test.")).result == TxtRecord(id="idn")
    assert {q.name for q in dns_server.queries} == {"_mta-sts.xn--bcher-kva.test"}


async def test_invalid_domain_name_raises(discovery: Discovery) -> None:
    with pytest.raises(DnsLookupError):
        await discovery.lookup_txt("a..b")
    with pytest.raises(DnsLookupError):
        await discovery.lookup_txt("x" * 64 + ".test")


async def test_mx_in_preference_order(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.set_mx(D, (20, "B.Example.TEST."), (10, "mx1.example.test"), (30, "c.other.test"))
    assert await discovery.lookup_mx(D) == ("mx1.example.test", "b.example.test", "c.other.test")


async def test_mx_absent_or_null(discovery: Discovery, dns_server: DnsServer) -> None:
    assert await discovery.lookup_mx("nowhere.test") == ()
    dns_server.set_a("nodata.test", "127.0.0.1")
    assert await discovery.lookup_mx("nodata.test") == ()
    dns_server.set_mx("null.test", (0, "."))
    assert await discovery.lookup_mx("null.test") == ()


async def test_mx_failure_raises(discovery: Discovery, dns_server: DnsServer) -> None:
    dns_server.fail(D, "servfail", "MX")
    with pytest.raises(DnsLookupError):
        await discovery.lookup_mx(D)


def test_bad_timeouts_rejected() -> None:
    with pytest.raises(ConfigError):
        Discovery(nameservers=["127.0.0.1"], dns_timeout=0)


async def test_servers_from_resolv_conf_are_used(dns_server: DnsServer, tmp_path: Path) -> None:
    """With no `nameservers` the system configuration applies: dnspython hands its servers over
    as address strings (on the resolver's port), not as nameserver objects."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nnameserver https://doh.invalid/dns-query\n")
    resolver = dns.asyncresolver.Resolver(filename=str(conf))
    resolver.port = dns_server.address[1]
    dns_server.set_txt(Q, "v=STSv1; id=conf")
    assert (await DnsClient(resolver).txt(D)).result == TxtRecord(id="conf")


async def test_a_speculative_mx_answer_is_read_when_wanted_and_dropped_quietly_when_not(
    discovery: Discovery, dns_server: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """`mx_later`: the question leaves at once; its answer is parsed only when read. One that
    failed and was never read is dropped without asyncio's "never retrieved" complaint."""
    import asyncio
    import gc

    dns_server.set_mx("example.test", (10, "mx.example.test"))
    later = discovery.mx_later("example.test")
    assert (await later.mx()).hosts == ("mx.example.test",)
    dns_server.fail("failing.test", "servfail", "MX")
    unread = discovery.mx_later("failing.test")
    await asyncio.sleep(0.3)  # the SERVFAIL answer has come and failed the question
    unread.cancel()
    del unread
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_an_mx_hosts_addresses_are_both_families_ipv4_first(
    discovery: Discovery, dns_server: DnsServer
) -> None:
    """The probe tries these in order: an MX whose IPv4 is broken is reached over IPv6, as
    Postfix would (only IPv4 came back when the host had an A record)."""
    dns_server.set_a("mx.example.test", "192.0.2.25")
    dns_server.set_aaaa("mx.example.test", "2001:db8::25")
    assert await discovery.lookup_addresses("mx.example.test") == ["192.0.2.25", "2001:db8::25"]
    dns_server.set_a("v4.example.test", "192.0.2.26")
    assert await discovery.lookup_addresses("v4.example.test") == ["192.0.2.26"]
    dns_server.set_aaaa("v6.example.test", "2001:db8::26")
    assert await discovery.lookup_addresses("v6.example.test") == ["2001:db8::26"]
    dns_server.fail("mx.example.test", "servfail", "A")
    assert await discovery.lookup_addresses("mx.example.test") == ["2001:db8::25"]
    dns_server.fail("mx.example.test", "servfail")
    with pytest.raises(DnsLookupError):
        await discovery.lookup_addresses("mx.example.test")
