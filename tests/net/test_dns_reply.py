"""dns_reply.py reads replies exactly as dnspython's Message did: the same replies refused, the
same rcode, AD bit, records, TTL and CNAME steps (or the same chain error) for the rest.

The oracle is the reading the transport used before: `dns.message.from_wire(wire,
ignore_trailing=True)`, `Message.is_response` as the transport checked it (RFC 5452 §9.1), then
`QueryMessage.resolve_chaining()`. Replies are written record by record (any order, duplicates,
mixed case, compression, OPT and TSIG records anywhere), then sometimes cut or corrupted.
"""

from __future__ import annotations

import io
import itertools
import struct
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.net.dns_transport import _Query

TXT, A, AAAA, MX = dns.rdatatype.TXT, dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX
CNAME, SOA, NS = dns.rdatatype.CNAME, dns.rdatatype.SOA, dns.rdatatype.NS
OPT, TSIG = dns.rdatatype.OPT, dns.rdatatype.TSIG
IN, CH = dns.rdataclass.IN, dns.rdataclass.CH
QNAME = "_mta-sts.example.test"
NAMES = [
    QNAME,
    "mta-sts.example.test",
    "hop.example.test",
    "example.test",
    "test",
    "",
    "other.invalid",
]
ERRORS_WITHOUT_QUESTION = (
    dns.rcode.FORMERR,
    dns.rcode.SERVFAIL,
    dns.rcode.NOTIMP,
    dns.rcode.REFUSED,
)

Record = tuple[dns.name.Name, int, int, int, Any]
"""(owner, class, type, TTL, rdata object or raw rdata bytes)"""


# The oracle: the reading before dns_reply.py.


def old_is_response(query: _Query, reply: dns.message.Message) -> bool:
    if not reply.flags & dns.flags.QR or reply.id != query.ident:
        return False
    if dns.opcode.from_flags(int(reply.flags)) != dns.opcode.QUERY:
        return False
    if not reply.question and reply.rcode() in ERRORS_WITHOUT_QUESTION:
        return True
    if len(reply.question) != 1:
        return False
    question = reply.question[0]
    return (
        question.name == query.name and question.rdtype == query.rdtype and question.rdclass == IN
    )


def old_reading(wire: bytes, query: _Query) -> tuple[Any, ...] | None:
    try:
        reply = dns.message.from_wire(wire, ignore_trailing=True)
    except dns.exception.DNSException:
        return None
    if not isinstance(reply, dns.message.QueryMessage) or not old_is_response(query, reply):
        return None
    head = (int(reply.rcode()), bool(reply.flags & dns.flags.AD))
    if reply.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return head  # the transport reads no further
    try:
        chain = reply.resolve_chaining()
    except dns.exception.DNSException as exc:
        return (*head, type(exc), str(exc))
    records = list(chain.answer) if chain.answer is not None else []
    cnames = [(rrset.name, rrset[0].target) for rrset in chain.cnames]
    return (*head, texts(records), int(chain.minimum_ttl), cnames)


def new_reading(wire: bytes, query: _Query) -> tuple[Any, ...] | None:
    reply = query.read(wire)
    if reply is None:
        return None
    head = (int(reply.rcode), reply.authenticated)
    if reply.rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return head
    try:
        chain = reply.resolve()
    except dns.exception.DNSException as exc:
        return (*head, type(exc), str(exc))
    return (*head, texts(chain.records), chain.ttl, list(chain.cnames))


def texts(records: list[Any] | tuple[Any, ...]) -> list[tuple[int, int, str]]:
    return [(rd.rdclass, rd.rdtype, rd.to_text()) for rd in records]


# Writing replies.


def render(
    header: tuple[int, int], questions: list[tuple[str, int, int]], sections: list[list[Record]]
) -> bytes:
    """A reply with names compressed where dnspython would (owners and rdata names)."""
    out = io.BytesIO()
    out.write(bytes(12))
    compress: dict[Any, int] = {}
    for text, rdtype, rdclass in questions:
        dns.name.from_text(text).to_wire(out, compress)
        out.write(struct.pack("!HH", rdtype, rdclass))
    for section in sections:
        for owner, rdclass, rdtype, ttl, rd in section:
            owner.to_wire(out, compress)
            out.write(struct.pack("!HHI", rdtype, rdclass, ttl))
            start = out.tell()
            out.write(b"\0\0")
            if isinstance(rd, bytes):
                out.write(rd)
            else:
                rd.to_wire(out, compress)
            end = out.tell()
            out.seek(start)
            out.write(struct.pack("!H", end - start - 2))
            out.seek(end)
    wire = bytearray(out.getvalue())
    counts = [len(questions), *(len(section) for section in sections)]
    wire[:12] = struct.pack("!HHHHHH", *header, *counts)
    return bytes(wire)


def cased(text: str, upper: bool) -> dns.name.Name:
    return dns.name.from_text(text.upper() if upper else text)


names = st.builds(cased, st.sampled_from(NAMES), st.booleans())
ttls = st.sampled_from([0, 1, 30, 300, 3600, 2**31 - 1, 2**31, 2**32 - 1])


@st.composite
def rdata(draw: st.DrawFn, rdtype: int, rdclass: int = IN) -> Any:
    if rdtype == TXT:
        strings = draw(
            st.lists(
                st.sampled_from(["v=STSv1; id=1", "v=STSv1; id=2", "v=spf1 -all", ""]),
                min_size=1,
                max_size=2,
            )
        )
        text = " ".join(f'"{s}"' for s in strings)
    elif rdtype == A:
        text = f"192.0.2.{draw(st.integers(0, 2))}"
    elif rdtype == AAAA:
        text = f"2001:db8::{draw(st.integers(0, 2))}"
    elif rdtype == MX:
        text = f"{draw(st.sampled_from([0, 10, 20]))} {draw(names)}"
    elif rdtype in (CNAME, NS):
        text = str(draw(names))
    else:
        assert rdtype == SOA
        text = f"ns.test. host.test. 1 2 3 4 {draw(ttls)}"
    return dns.rdata.from_text(rdclass, rdtype, text)


@st.composite
def records(draw: st.DrawFn, types: tuple[int, ...] = (TXT, A, AAAA, MX, CNAME, SOA)) -> Record:
    rdtype = draw(st.sampled_from(types))
    rdclass = CH if rdtype == TXT and draw(st.integers(0, 9)) == 0 else IN
    return (draw(names), rdclass, rdtype, draw(ttls), draw(rdata(rdtype, rdclass)))


@st.composite
def chains(draw: st.DrawFn, qtype: int) -> list[Record]:
    """CNAMEs from the question on (sometimes over dnspython's limit), data at the end or not."""
    length = draw(st.sampled_from([0, 1, 2, 3, 15, 16, 17]))
    hops = [dns.name.from_text(QNAME)] + [
        cased(f"c{i}.example.test", draw(st.booleans())) for i in range(length)
    ]
    found = [
        (alias, IN, CNAME, draw(ttls), dns.rdata.from_text(IN, CNAME, str(target)))
        for alias, target in itertools.pairwise(hops)
    ]
    for _ in range(draw(st.integers(0, 3))):
        found.append((hops[-1], IN, qtype, draw(ttls), draw(rdata(qtype))))
    return found


def opt(owner: dns.name.Name = dns.name.root, erc: int = 0, options: bytes = b"") -> Record:
    """An OPT record: class = UDP payload, the TTL's top byte = the rcode's upper bits."""
    return (owner, 1232, OPT, erc << 24 | 0x8000, options)


OPTIONS = [
    b"",
    b"\x00\x0f\x00\x02\x00\x12",
    b"\x00\x08\x00\x01\x00",
    b"\x00\x0a\x00\x08" + bytes(8),
]
FAULTS = ["id", "qr", "opcode", "no-question", "two-questions", "qname", "qtype", "qclass"]
FAULTS += [
    "opt-in-answer",
    "opt-in-authority",
    "opt-owner",
    "two-opts",
    "tsig",
    "cut",
    "flip",
    "junk",
]


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, _Query]:
    """A reply to our question, often with one fault: the wrong header or question, a
    misplaced OPT, a TSIG, cut short, a flipped byte or trailing junk."""
    qtype = draw(st.sampled_from([TXT, A, AAAA, MX]))
    query = _Query(QNAME, qtype, dns.flags.RD | dns.flags.AD, 1232)
    fault = draw(st.sampled_from(["none"] * len(FAULTS) + FAULTS))
    rcode = draw(
        st.sampled_from(
            [dns.rcode.NOERROR] * 6
            + [dns.rcode.NXDOMAIN] * 3
            + [*ERRORS_WITHOUT_QUESTION, dns.rcode.YXDOMAIN, dns.rcode.BADVERS]
        )
    )
    opcode = dns.opcode.NOTIFY if fault == "opcode" else dns.opcode.QUERY
    flags = dns.opcode.to_flags(opcode) | dns.flags.RD | dns.flags.RA | (rcode & 0xF)
    flags |= 0 if fault == "qr" else dns.flags.QR
    flags |= dns.flags.AD if draw(st.booleans()) else 0
    ident = query.ident ^ 1 if fault == "id" else query.ident
    question = (QNAME.upper() if draw(st.booleans()) else QNAME, qtype, IN)
    questions = {
        "no-question": [],
        "two-questions": [question, question],
        "qname": [("other.invalid", qtype, IN)],
        "qtype": [(QNAME, TXT if qtype != TXT else A, IN)],
        "qclass": [(QNAME, qtype, CH)],
    }.get(fault, [question])
    answer = draw(st.permutations(draw(chains(qtype)) + draw(st.lists(records(), max_size=2))))
    authority = draw(st.lists(records((SOA, SOA, NS)), max_size=3))
    additional = draw(st.lists(records((A, AAAA)), max_size=2))
    if rcode > 15 or draw(st.booleans()):
        additional.append(opt(erc=rcode >> 4, options=draw(st.sampled_from(OPTIONS))))
    if fault.startswith("opt") or fault == "two-opts":
        misplaced = opt(dns.name.root if fault != "opt-owner" else draw(names))
        where = {"opt-in-answer": answer, "opt-in-authority": authority}.get(fault, additional)
        where.append(misplaced)
    if fault == "tsig":
        tsig = (dns.name.root, dns.rdataclass.ANY, TSIG, 0, draw(st.binary(max_size=8)))
        draw(st.sampled_from([answer, additional])).append(tsig)
    wire = render((ident, flags), questions, [list(answer), authority, additional])
    if fault == "cut":
        wire = wire[: draw(st.integers(0, len(wire)))]
    elif fault == "flip":
        at = draw(st.integers(0, len(wire) - 1))
        wire = wire[:at] + bytes([wire[at] ^ draw(st.integers(1, 255))]) + wire[at + 1 :]
    elif fault == "junk":
        wire += draw(st.binary(min_size=1, max_size=4))
    return wire, query


@settings(max_examples=600, deadline=None)
@given(replies())
def test_replies_read_as_dnspython_read_them(reply: tuple[bytes, _Query]) -> None:
    wire, query = reply
    assert new_reading(wire, query) == old_reading(wire, query)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([TXT, A]))
def test_garbage_with_our_id_is_refused_as_dnspython_refused_it(tail: bytes, qtype: int) -> None:
    query = _Query(QNAME, qtype, dns.flags.RD, 1232)
    wire = query.ident.to_bytes(2, "big") + b"\x81\x80" + tail
    assert new_reading(wire, query) == old_reading(wire, query)


@settings(max_examples=300, deadline=None)
@given(replies())
def test_a_reply_written_out_again_reads_the_same(reply: tuple[bytes, _Query]) -> None:
    """The TCP retry gets a Message from dnspython and reads it written out again."""
    wire, query = reply
    read = old_reading(wire, query)
    if read is not None:
        message = dns.message.from_wire(wire, ignore_trailing=True)
        assert new_reading(message.to_wire(want_shuffle=False), query) == read
