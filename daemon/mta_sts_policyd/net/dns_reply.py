"""A DNS reply's wire form read into what discovery uses, without building a dnspython Message.

Why: `dns.message.from_wire` and `QueryMessage.resolve_chaining` cost ~1.5 M instructions per
reply, and every cold lookup reads two or more replies on its critical path. Most of that builds
what is never read: the Message, RRsets that de-duplicate every record, EDNS objects, enum
values, parent names for the SOA search. dnspython still reads every name and every record here
(`dns.name.from_wire_parser`, `dns.rdata.from_wire_parser`), so a reply it cannot read is
refused here too; only the bookkeeping around them is ours, and it keeps the rules of
`from_wire(..., ignore_trailing=True)`, `Message.is_response` and `resolve_chaining`
(tests/net/test_dns_reply.py holds both readings against each other on random replies).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
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
import dns.ttl
import dns.wire

_HEADER = struct.Struct("!HHHHHH")
_ERRORS_WITHOUT_QUESTION = frozenset(
    (dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED)
)
_NEGATIVE_TTL_WITHOUT_SOA: int | None = getattr(dns.message, "NEGATIVE_TTL_WITHOUT_SOA", None)
"""The TTL of "nothing" without an SOA in the reply, as the installed dnspython has it (2.3 has
none: the chain's TTL stands)."""
_OPCODE = 0x7800  # the opcode bits: dns.opcode.from_flags raises on unassigned ones in 2.3
_QUERY = dns.opcode.to_flags(dns.opcode.QUERY)
_ANSWER, _AUTHORITY, _ADDITIONAL = 1, 2, 3
_IN = dns.rdataclass.IN
_CNAME = dns.rdatatype.CNAME
_SOA = dns.rdatatype.SOA
_OPT = dns.rdatatype.OPT
_TSIG = dns.rdatatype.TSIG
_NONE = dns.rdatatype.NONE

_Record = tuple[dns.name.Name, int, int, int, int, Any]
"""(owner, class, type, covered type, TTL, rdata) of one resource record."""


@dataclass(frozen=True, slots=True)
class Chain:
    """What `resolve_chaining` finds: the data at the end of the CNAME chain, if any."""

    records: tuple[Any, ...]
    """The rdata of the asked type there, each once (first occurrence); () for NODATA/NXDOMAIN."""
    ttl: int
    """Smallest TTL along the chain, or the negative-caching TTL (SOA minimum) without data."""
    cnames: tuple[tuple[dns.name.Name, dns.name.Name], ...]
    """The CNAME steps followed: (alias, target), in order."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply to our question: its rcode (the extended one when it has an OPT record), its
    flags, and the records `resolve` needs (the answer section, the authority's SOAs)."""

    rcode: dns.rcode.Rcode
    flags: int
    question: tuple[dns.name.Name, int] | None
    """The question as the reply repeats it; None for an error reply that left it out."""
    answer: tuple[_Record, ...]
    soas: tuple[_Record, ...]

    @property
    def nxdomain(self) -> bool:
        return self.rcode == dns.rcode.NXDOMAIN

    @property
    def authenticated(self) -> bool:
        """The resolver set AD: it validated the answer with DNSSEC."""
        return bool(self.flags & dns.flags.AD)

    def resolve(self) -> Chain:
        """Follow the CNAME chain from the question as `resolve_chaining` does; raises its
        DNSExceptions (a chain over dnspython's MAX_CHAIN, data in an NXDOMAIN reply)."""
        if self.question is None:
            raise dns.exception.FormError
        name, rdtype = self.question
        ttl = dns.ttl.MAX_TTL
        cnames: list[tuple[dns.name.Name, dns.name.Name]] = []
        found: list[_Record] = []
        while len(cnames) < dns.message.MAX_CHAIN:
            found = _rrset(self.answer, name, rdtype)
            if found:
                ttl = min(ttl, *(rr[4] for rr in found))
                break
            aliases = _rrset(self.answer, name, _CNAME) if rdtype != _CNAME else []
            if not aliases:
                break
            ttl = min(ttl, *(rr[4] for rr in aliases))
            target = aliases[-1][5].target  # a CNAME RRset keeps only its last record
            cnames.append((name, target))
            name = target
        if len(cnames) >= dns.message.MAX_CHAIN:
            raise dns.message.ChainTooLong
        if found and self.nxdomain:
            raise dns.message.AnswerForNXDOMAIN
        if not found:
            ttl = min(ttl, self._negative_ttl(name))
        return Chain(_distinct(found, rdtype), ttl, tuple(cnames))

    def _negative_ttl(self, name: dns.name.Name) -> int:
        """The SOA of the closest enclosing zone in the authority section: min(TTL, minimum)."""
        owner = max((rr[0] for rr in self.soas if name.is_subdomain(rr[0])), key=len, default=None)
        if owner is None:
            no_soa = _NEGATIVE_TTL_WITHOUT_SOA
            return dns.ttl.MAX_TTL if no_soa is None else no_soa
        soas = _rrset(self.soas, owner, _SOA)
        return min(*(rr[4] for rr in soas), int(soas[-1][5].minimum))  # an SOA RRset keeps its last


def read_reply(
    wire: bytes, ident: int, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> Reply | None:
    """The reply to our question (`ident`, `qname`, `rdtype`, class IN), or None when dnspython
    would not read it (`from_wire` raising) or it does not answer that question."""
    if len(wire) < _HEADER.size:
        return None
    reply_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    if not flags & dns.flags.QR or reply_id != ident or flags & _OPCODE != _QUERY:
        return None
    parser = dns.wire.Parser(wire, _HEADER.size)
    try:
        questions = [_question(parser) for _ in range(qdcount)]
        first = questions[0][0] if questions else None
        answer = _section(parser, _ANSWER, ancount, first)
        authority = _section(parser, _AUTHORITY, nscount, first)
        additional = _section(parser, _ADDITIONAL, arcount, first)
    except dns.exception.DNSException:
        return None
    opt = [rr[4] for rr in additional if rr[2] == _OPT]  # the raw TTL carries the extended rcode
    rcode = dns.rcode.from_flags(flags, opt[0] if opt else 0)
    if not questions and rcode in _ERRORS_WITHOUT_QUESTION:
        question = None  # as dnspython: an error reply may leave the question out
    elif len(questions) != 1 or questions[0][1:] != (rdtype, _IN) or questions[0][0] != qname:
        return None
    else:
        question = (questions[0][0], rdtype)
    soas = tuple(rr for rr in authority if rr[2] == _SOA and rr[1] == _IN)
    return Reply(rcode, flags, question, tuple(answer), soas)


def _question(parser: dns.wire.Parser) -> tuple[dns.name.Name, int, int]:
    name = dns.name.from_wire_parser(parser)
    rdtype, rdclass = parser.get_struct("!HH")
    return name, rdtype, rdclass


def _section(
    parser: dns.wire.Parser, section: int, count: int, first: dns.name.Name | None
) -> list[_Record]:
    """`count` records, each read by dnspython; OPT and TSIG checked as `from_wire` checks
    them (OPT: once, in the additional section, owned by the root; TSIG: never without a key)."""
    records: list[_Record] = []
    for _ in range(count):
        name = _owner(parser, first)
        rdtype, rdclass, ttl, rdlen = parser.get_struct("!HHIH")
        if rdtype == _TSIG:
            raise dns.message.BadTSIG  # or UnknownTSIGKey: signed replies are never read
        if rdtype == _OPT and (
            section != _ADDITIONAL or any(rr[2] == _OPT for rr in records) or name != dns.name.root
        ):
            raise dns.message.BadEDNS
        if rdtype == _OPT and not rdlen:
            records.append((name, rdclass, rdtype, _NONE, ttl, None))  # no options to check
            continue
        with parser.restrict_to(rdlen):
            rd = dns.rdata.from_wire_parser(rdclass, rdtype, parser)
        if rdtype != _OPT and ttl > 0x7FFFFFFF:
            ttl = 0  # as from_wire
        records.append((name, rdclass, rdtype, rd.covers(), ttl, rd))
    return records


def _owner(parser: dns.wire.Parser, first: dns.name.Name | None) -> dns.name.Name:
    """The owner name dnspython reads at the parser. Two are known without reading them: the
    root (one zero byte, the OPT record's owner) and a pointer to offset 12 (every answer's
    owner usually), the first question's name, already read."""
    head = parser.wire[parser.current : parser.current + 2]
    if head[:1] == b"\0":
        parser.get_bytes(1)
        return dns.name.root
    if head == b"\xc0\x0c" and first is not None:
        parser.get_bytes(2)
        return first
    return dns.name.from_wire_parser(parser)


def _distinct(records: list[_Record], rdtype: int) -> tuple[Any, ...]:
    """The rdata an RRset keeps of `records`: the first of equal ones (dnspython compares them
    in canonical form), only the last for a singleton type such as CNAME or SOA."""
    if len(records) < 2:
        return tuple(rr[5] for rr in records)
    if dns.rdatatype.is_singleton(rdtype):  # type: ignore[arg-type]
        return (records[-1][5],)
    return tuple(dict.fromkeys(rr[5] for rr in records))


def _rrset(records: tuple[_Record, ...], name: dns.name.Name, rdtype: int) -> list[_Record]:
    """The records `find_rrset(section, name, IN, rdtype)` would have gathered into one RRset."""
    return [
        rr
        for rr in records
        if rr[2] == rdtype and rr[1] == _IN and rr[3] == _NONE and rr[0] == name
    ]
