"""A loopback DNS server for tests and benchmarks (dnspython messages, plain sockets, one thread).

It answers like a recursive resolver would: CNAME chains are followed inside the zone and the
whole chain is returned, NXDOMAIN/NODATA carry an SOA so negative TTLs work, and names can be
made to fail (SERVFAIL, REFUSED) or stay silent. A thread (not asyncio) serves it, so sync tests,
async tests and subprocesses (the daemon under test) can all use it.

Benchmarks with 10k-100k domains either fill the dict (cheap) or set `zone_callback`, a function
name -> records that is consulted for names not in the dict.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

Failure = Literal["nxdomain", "servfail", "refused", "drop", "tc-then-close"]
"""What a failing name does: NXDOMAIN, SERVFAIL, REFUSED, no reply at all ("drop"), or a
truncated UDP reply followed by a TCP connection closed without an answer ("tc-then-close": a
resolver at its TCP limit)."""

_IN = dns.rdataclass.IN
_MAX_CHAIN = 16
_ROOT = dns.name.root


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record of a name. Build with the helpers below (txt, cname, mx, a, aaaa)."""

    rdtype: dns.rdatatype.RdataType
    rdata: dns.rdata.Rdata
    ttl: int = 300


def txt(*strings: str | bytes, ttl: int = 300) -> Record:
    """A TXT RR made of one or more character-strings (bytes are sent as they are)."""
    raw = [s.encode() if isinstance(s, str) else s for s in strings]
    return Record(dns.rdatatype.TXT, dns.rdtypes.ANY.TXT.TXT(_IN, dns.rdatatype.TXT, raw), ttl)


def cname(target: str, ttl: int = 300) -> Record:
    rd = dns.rdata.from_text(_IN, dns.rdatatype.CNAME, _absolute(target).to_text())
    return Record(dns.rdatatype.CNAME, rd, ttl)


def mx(preference: int, exchange: str, ttl: int = 300) -> Record:
    rd = dns.rdata.from_text(_IN, dns.rdatatype.MX, f"{preference} {_absolute(exchange)}")
    return Record(dns.rdatatype.MX, rd, ttl)


def a(address: str, ttl: int = 300) -> Record:
    return Record(dns.rdatatype.A, dns.rdata.from_text(_IN, dns.rdatatype.A, address), ttl)


def aaaa(address: str, ttl: int = 300) -> Record:
    rd = dns.rdata.from_text(_IN, dns.rdatatype.AAAA, address)
    return Record(dns.rdatatype.AAAA, rd, ttl)


def tlsa(usage: int, selector: int, mtype: int, digest_hex: str, ttl: int = 300) -> Record:
    """A TLSA RR (RFC 6698), e.g. tlsa(3, 1, 1, "ab" * 32) for DANE-EE SPKI SHA-256."""
    rd = dns.rdata.from_text(_IN, dns.rdatatype.TLSA, f"{usage} {selector} {mtype} {digest_hex}")
    return Record(dns.rdatatype.TLSA, rd, ttl)


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + ".") if name not in ("", ".") else _ROOT


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _rdtype(rtype: str | dns.rdatatype.RdataType) -> dns.rdatatype.RdataType:
    return dns.rdatatype.RdataType.make(rtype)


Node = Sequence[Record] | Failure
"""What the zone holds for a name: its records, or a failure mode for every type."""

ZoneCallback = Callable[[str], Node | None]
"""Called with a lower-case name without trailing dot for names not in the zone dict."""


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    rtype: str
    transport: Literal["udp", "tcp"]


class DnsServer:
    """Serve a mutable in-memory zone on 127.0.0.1 (UDP and TCP, same OS-chosen port)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        zone_callback: ZoneCallback | None = None,
        negative_ttl: int = 60,
        record_queries: bool = True,
    ) -> None:
        self.host = host
        self.zone_callback = zone_callback
        self.negative_ttl = negative_ttl
        self.record_queries = record_queries
        self._zone: dict[str, list[Record]] = {}
        self._failures: dict[tuple[str, dns.rdatatype.RdataType | None], Failure] = {}
        self.authenticated: set[str] = set()
        """Names answered with the AD bit (DNSSEC-validated), e.g. "_25._tcp.mx.example"."""
        self._delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self.queries: list[Query] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()

    # ----- zone editing -------------------------------------------------------------------
    def set(self, name: str, *records: Record) -> None:
        """Replace everything about `name` with `records` (no records = NODATA for every type)."""
        with self._lock:
            self._zone[_key(name)] = list(records)
            for key in [k for k in self._failures if k[0] == _key(name)]:
                del self._failures[key]

    def add(self, name: str, *records: Record) -> None:
        with self._lock:
            self._zone.setdefault(_key(name), []).extend(records)

    def set_txt(self, name: str, *rrs: str | bytes | Sequence[str | bytes], ttl: int = 300) -> None:
        """Each argument is one TXT RR: a string, or a sequence of character-strings."""
        records = [
            txt(rr, ttl=ttl) if isinstance(rr, str | bytes) else txt(*rr, ttl=ttl) for rr in rrs
        ]
        self._replace_type(name, dns.rdatatype.TXT, records)

    def set_cname(self, name: str, target: str, ttl: int = 300) -> None:
        self.set(name, cname(target, ttl))

    def set_mx(self, name: str, *hosts: tuple[int, str], ttl: int = 300) -> None:
        self._replace_type(name, dns.rdatatype.MX, [mx(p, h, ttl) for p, h in hosts])

    def set_a(self, name: str, *addresses: str, ttl: int = 300) -> None:
        self._replace_type(name, dns.rdatatype.A, [a(x, ttl) for x in addresses])

    def set_aaaa(self, name: str, *addresses: str, ttl: int = 300) -> None:
        self._replace_type(name, dns.rdatatype.AAAA, [aaaa(x, ttl) for x in addresses])

    def fail(self, name: str, failure: Failure, rtype: str | None = None) -> None:
        """Make `name` (all types, or only `rtype`) answer with `failure`."""
        with self._lock:
            self._failures[(_key(name), _rdtype(rtype) if rtype else None)] = failure

    def delay(self, name: str, seconds: float) -> None:
        """Answer queries for `name` only after `seconds` (other names are not held up)."""
        with self._lock:
            self._delays[_key(name)] = seconds

    def remove(self, name: str) -> None:
        """Forget `name` (it becomes NXDOMAIN), including failures and delays."""
        with self._lock:
            self._zone.pop(_key(name), None)
            self._delays.pop(_key(name), None)
            for key in [k for k in self._failures if k[0] == _key(name)]:
                del self._failures[key]

    def _replace_type(
        self, name: str, rdtype: dns.rdatatype.RdataType, records: Iterable[Record]
    ) -> None:
        with self._lock:
            kept = [r for r in self._zone.get(_key(name), []) if r.rdtype != rdtype]
            self._zone[_key(name)] = kept + list(records)

    # ----- observation ---------------------------------------------------------------------
    def query_count(self, name: str, rtype: str = "TXT") -> int:
        with self._lock:
            return self._counts[(_key(name), rtype.upper())]

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self.queries.clear()

    @property
    def address(self) -> tuple[str, int]:
        if self._udp is None:
            raise RuntimeError("DnsServer is not started")
        host, port = self._udp.getsockname()[:2]
        return host, port

    @property
    def nameserver(self) -> str:
        """The "IP:PORT" ("[IPv6]:PORT") form the daemon's `nameservers` option takes."""
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # ----- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self._udp, self._tcp = _bind_pair(self.host)
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    # ----- serving -------------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, "udp")
            sel.register(self._tcp, selectors.EVENT_READ, "tcp")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.data == "udp":
                        self._serve_udp()
                    elif key.data == "tcp":
                        self._accept_tcp()

    def _serve_udp(self) -> None:
        assert self._udp is not None
        try:
            data, peer = self._udp.recvfrom(65535)
        except OSError:
            return
        udp = self._udp

        def send(wire: bytes) -> None:
            with contextlib.suppress(OSError):
                udp.sendto(wire, peer)

        self._handle(data, "udp", send)

    def _accept_tcp(self) -> None:
        assert self._tcp is not None
        try:
            conn, _ = self._tcp.accept()
        except OSError:
            return
        threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True).start()

    def _serve_tcp(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            while not self._stopping.is_set():
                header = _recv_exact(conn, 2)
                if header is None:
                    return
                data = _recv_exact(conn, struct.unpack("!H", header)[0])
                if data is None:
                    return

                def send(wire: bytes) -> None:
                    with contextlib.suppress(OSError):
                        conn.sendall(struct.pack("!H", len(wire)) + wire)

                if self._handle(data, "tcp", send, sync=True) == "close":
                    return

    def _handle(
        self,
        data: bytes,
        transport: Literal["udp", "tcp"],
        send: Callable[[bytes], None],
        sync: bool = False,
    ) -> Literal["close"] | None:
        """Answer one query; "close" asks the TCP loop to hang up without answering."""
        try:
            query = dns.message.from_wire(data)
            question = query.question[0]
        except (dns.exception.DNSException, IndexError):
            return None
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.RdataType(question.rdtype)
        self._record(name, rdtype, transport)
        if self._node(name, rdtype) == "tc-then-close":
            if transport == "tcp":
                return "close"
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.RA | dns.flags.TC
            send(truncated.to_wire())
            return None
        wire = self._respond(query, name, rdtype, transport)
        if wire is None:
            return None
        delay = self._delays.get(name, 0.0)
        if delay <= 0:
            send(wire)
        elif sync:
            self._stopping.wait(delay)
            send(wire)
        else:
            timer = threading.Timer(delay, send, args=(wire,))
            timer.daemon = True
            timer.start()
        return None

    def _record(self, name: str, rdtype: dns.rdatatype.RdataType, transport: str) -> None:
        rtype = dns.rdatatype.to_text(rdtype)
        with self._lock:
            self._counts[(name, rtype)] += 1
            if self.record_queries:
                self.queries.append(Query(name, rtype, transport))  # type: ignore[arg-type]

    def _respond(
        self, query: dns.message.Message, name: str, rdtype: dns.rdatatype.RdataType, transport: str
    ) -> bytes | None:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        with self._lock:
            if name in self.authenticated:  # plays a validating resolver for this name
                response.flags |= dns.flags.AD
        outcome = self._resolve(name, rdtype, response)
        if outcome == "drop":
            return None
        response.set_rcode(_RCODES[outcome])
        if outcome == "nxdomain" or (outcome == "noerror" and not _has_type(response, rdtype)):
            response.authority.append(self._soa())
        limit = 65535 if transport == "tcp" else max(512, query.payload if query.edns >= 0 else 512)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.RA | dns.flags.TC
            return truncated.to_wire()

    def _resolve(
        self, name: str, rdtype: dns.rdatatype.RdataType, response: dns.message.Message
    ) -> Failure | Literal["noerror"]:
        """Walk the CNAME chain from `name`, appending RRsets to the answer section."""
        for _ in range(_MAX_CHAIN):
            node = self._node(name, rdtype)
            if node is None or isinstance(node, str):
                return node or "nxdomain"
            wanted = [r for r in node if r.rdtype == rdtype]
            alias = [r for r in node if r.rdtype == dns.rdatatype.CNAME]
            if wanted or not alias or rdtype == dns.rdatatype.CNAME:
                if wanted:
                    response.answer.append(_rrset(name, wanted))
                return "noerror"
            response.answer.append(_rrset(name, alias[:1]))
            name = _key(alias[0].rdata.target.to_text())  # type: ignore[attr-defined]
        return "servfail"

    def _node(self, name: str, rdtype: dns.rdatatype.RdataType) -> Node | None:
        with self._lock:
            failure = self._failures.get((name, rdtype)) or self._failures.get((name, None))
            records = self._zone.get(name)
        if failure is not None:
            return failure
        if records is not None:
            return records
        return self.zone_callback(name) if self.zone_callback is not None else None

    def _soa(self) -> dns.rrset.RRset:
        soa = dns.rdata.from_text(
            _IN,
            dns.rdatatype.SOA,
            f"ns.invalid. hostmaster.invalid. 1 3600 600 86400 {self.negative_ttl}",
        )
        return dns.rrset.from_rdata_list(_ROOT, self.negative_ttl, [soa])


_RCODES = {
    "noerror": dns.rcode.NOERROR,
    "nxdomain": dns.rcode.NXDOMAIN,
    "servfail": dns.rcode.SERVFAIL,
    "refused": dns.rcode.REFUSED,
}


def _has_type(response: dns.message.Message, rdtype: dns.rdatatype.RdataType) -> bool:
    return any(rrset.rdtype == rdtype for rrset in response.answer)


def _rrset(name: str, records: Sequence[Record]) -> dns.rrset.RRset:
    ttl = min(r.ttl for r in records)
    return dns.rrset.from_rdata_list(_absolute(name), ttl, [r.rdata for r in records])


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        try:
            chunk = conn.recv(size - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def _bind_pair(host: str) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on the same OS-chosen port (retry if TCP finds it taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(128)
        return udp, tcp
    raise OSError("could not bind UDP and TCP to the same port")
