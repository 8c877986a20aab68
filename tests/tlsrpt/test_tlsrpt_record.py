"""`_smtp._tls` TXT selection and parsing (RFC 8460 §3)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.tlsrpt.record import (
    RecordSyntaxError,
    RuaDestination,
    fetch_tlsrpt_record,
    parse_tlsrpt_record,
    select_tlsrpt_record,
)
from mta_sts_policyd.tlsrpt.record_lookup import txt_lookup
from support.dns_server import DnsServer

MAILTO = RuaDestination("mailto", "a@x.example")
HTTPS = RuaDestination("https", "https://r.x.example/p")


@pytest.mark.parametrize(
    ("rrs", "expected"),
    [
        ([], None),
        ([[b"v=TLSRPTv1;rua=mailto:a@x.example"]], "v=TLSRPTv1;rua=mailto:a@x.example"),
        ([[b"v=TLSRPTv1;rua=mailto:a@x.example"], [b"v=TLSRPTv1;rua=mailto:b@x.example"]], None),
        (
            [[b"v=spf1 -all"], [b"v=TLSRPTv1;rua=mailto:a@x.example"]],
            "v=TLSRPTv1;rua=mailto:a@x.example",
        ),
        ([[b"v=TLSRPTv1 ;rua=mailto:a@x.example"]], "v=TLSRPTv1 ;rua=mailto:a@x.example"),
        ([[b"v=tlsrptv1;rua=mailto:a@x.example"]], None),
        ([[b"v=TLSRPTv10;rua=mailto:a@x.example"]], None),
        ([[b"v=TLSRPTv1", b";rua=mai", b"lto:a@x.example"]], "v=TLSRPTv1;rua=mailto:a@x.example"),
    ],
    ids=[
        "none",
        "one",
        "two",
        "spf-plus-one",
        "wsp-before-semicolon",
        "lowercase-v",
        "v10",
        "split-strings",
    ],
)
def test_select_exactly_one_candidate(rrs: list[list[bytes]], expected: str | None) -> None:
    """RFC 8460 §3: exactly one `v=TLSRPTv1` *WSP `;` record; strings joined without spaces."""
    assert select_tlsrpt_record(rrs) == expected


@pytest.mark.parametrize(
    ("text", "dests"),
    [
        ("v=TLSRPTv1;rua=mailto:a@x.example", [MAILTO]),
        ("v=TLSRPTv1; rua=mailto:a@x.example , https://r.x.example/p", [MAILTO, HTTPS]),
        ("v=TLSRPTv1;rua=mailto:a@x.example,https://r.x.example/p;", [MAILTO, HTTPS]),
        ("v=TLSRPTv1 ; foo=bar ; rua=mailto:a@x.example", [MAILTO]),
        ("v=TLSRPTv1;rua=mailto:a@x.example;rua=https://r.x.example/p", [MAILTO, HTTPS]),
        ("v=TLSRPTv1;rua=mailto:a%40x.example", [MAILTO]),
        ("v=TLSRPTv1;rua=mailto:a@x.example,mailto:a@x.example", [MAILTO]),
        ("v=TLSRPTv1;rua=MAILTO:a@x.example?subject=tls", [MAILTO]),
        (
            "v=TLSRPTv1;rua=mailto:a@x.example%2Cb@y.example",
            [MAILTO, RuaDestination("mailto", "b@y.example")],
        ),
    ],
    ids=[
        "basic",
        "spaces-around-comma",
        "trailing-semicolon",
        "extension-first",
        "two-rua-fields",
        "percent-encoded",
        "duplicate",
        "query-ignored",
        "encoded-comma",
    ],
)
def test_parse_destinations(text: str, dests: list[RuaDestination]) -> None:
    """RFC 8460 §3 and the cases sys4's parser gets wrong."""
    assert list(parse_tlsrpt_record(text).destinations) == dests


def test_unsupported_schemes_are_noted_not_fatal() -> None:
    """RFC 8460 §3: http:, ftp: are no destinations; the mailto next to them still is."""
    rec = parse_tlsrpt_record(
        "v=TLSRPTv1;rua=http://r.x.example/,ftp://f.x.example/,mailto:a@x.example,mailto:broken"
    )
    assert list(rec.destinations) == [MAILTO]
    assert rec.unsupported == ("http://r.x.example/", "ftp://f.x.example/", "mailto:broken")


def test_extensions_are_kept() -> None:
    rec = parse_tlsrpt_record("v=TLSRPTv1;ext_1=val.ue;rua=mailto:a@x.example")
    assert rec.extensions == (("ext_1", "val.ue"),)


@pytest.mark.parametrize(
    "text",
    [
        "v=TLSRPTv1;",
        "v=TLSRPTv1",
        "v=TLSRPTv1;rua=",
        "v=TLSRPTv1;rua=mailto:a@x.example,",
        "v=TLSRPTv1;rua=not a uri",
        "v=TLSRPTv1;=x",
        "v=TLSRPTv1;bad field",
    ],
)
def test_invalid_records_raise(text: str) -> None:
    with pytest.raises(RecordSyntaxError):
        parse_tlsrpt_record(text)


_uri = st.sampled_from(
    [
        "mailto:a@x.example",
        "https://r.x.example/p",
        "mailto:b%40y.example",
        "https://r.x.example:8443/a?b=c",
        "http://no.example/",
    ]
)
_ext = st.from_regex(r"[a-z][a-z0-9_.-]{0,10}=[a-z0-9./]{1,10}", fullmatch=True)
_wsp = st.sampled_from(["", " ", "\t", "  "])


@given(
    uris=st.lists(_uri, min_size=1, max_size=5),
    exts=st.lists(_ext, max_size=3),
    w=_wsp,
    trailing=st.booleans(),
)
def test_property_generated_records_parse(
    uris: list[str], exts: list[str], w: str, trailing: bool
) -> None:
    """Any ABNF-conforming record parses and yields the mailto/https URIs it contains."""
    fields = [*exts, "rua=" + f"{w},{w}".join(uris)]
    text = "v=TLSRPTv1" + "".join(f"{w};{w}{f}" for f in fields) + (";" if trailing else "")
    rec = parse_tlsrpt_record(text)
    expected = {u for u in uris if not u.startswith("http:")}
    assert {str(d).replace("b@y.example", "b%40y.example") for d in rec.destinations} == expected
    assert len(rec.unsupported) == sum(u.startswith("http:") for u in uris)


@given(st.text(max_size=80))
def test_property_parser_never_crashes(text: str) -> None:
    with contextlib.suppress(RecordSyntaxError):
        parse_tlsrpt_record(text)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


async def test_fetch_over_dns(dns: DnsServer) -> None:
    """RFC 8460 §3 through a real resolver: record, none, two records, SERVFAIL."""
    lookup = txt_lookup([dns.nameserver], timeout=2.0)
    dns.set_txt("_smtp._tls.one.example", ["v=TLSRPTv1;rua=mai", "lto:a@x.example"])
    dns.set_txt(
        "_smtp._tls.two.example",
        "v=TLSRPTv1;rua=mailto:a@x.example",
        "v=TLSRPTv1;rua=mailto:b@x.example",
    )
    dns.set_txt("_smtp._tls.bad.example", "v=TLSRPTv1;rua")
    rec = await fetch_tlsrpt_record("one.example", lookup)
    assert rec is not None and list(rec.destinations) == [MAILTO]
    assert await fetch_tlsrpt_record("two.example", lookup) is None
    assert await fetch_tlsrpt_record("bad.example", lookup) is None
    assert await fetch_tlsrpt_record("missing.example", lookup) is None
    dns.fail("_smtp._tls.broken.example", "servfail")
    with pytest.raises(DnsLookupError):
        await fetch_tlsrpt_record("broken.example", lookup)


async def test_report_record_prefers_the_producers_text_then_dns() -> None:
    """The one rule both senders (single host and fleet) use for where a report goes."""
    from mta_sts_policyd.tlsrpt.record import report_record

    asked: list[str] = []

    async def lookup(name: str) -> list[list[bytes]]:
        asked.append(name)
        return [[b"v=TLSRPTv1; rua=mailto:dns@example.net"]]

    known = await report_record("v=TLSRPTv1; rua=mailto:pr@example.net", "a.test", lookup)
    assert known is not None and str(known.destinations[0]) == "mailto:pr@example.net"
    assert asked == []
    assert await report_record("v=TLSRPTv1; rua=", "a.test", lookup) is None  # broken: no report
    found = await report_record(None, "a.test", lookup)
    assert found is not None and str(found.destinations[0]) == "mailto:dns@example.net"
    assert asked == ["_smtp._tls.a.test"]
    assert await report_record(None, "a.test", None) is None
