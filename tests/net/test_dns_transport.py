"""The DNS transport against real loopback servers: fallback between servers, silence, forgery.

Single-server behaviour (SERVFAIL, REFUSED, silence, TC -> TCP, CNAME chains) is covered through
DnsClient in test_discovery_dns.py; here the cases that need two servers or a lying one.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.net.dns_reply import Reply
from mta_sts_policyd.net.dns_transport import DnsTransport, Nameserver
from support.dns_server import DnsServer

Q = "_mta-sts.example.test"
TXT = dns.rdatatype.TXT


def transport(
    *servers: tuple[str, int], lifetime: float = 2.0, attempt: float = 0.3
) -> DnsTransport:
    return DnsTransport(
        [Nameserver(host, port) for host, port in servers],
        lifetime=lifetime,
        attempt_timeout=attempt,
        payload=1232,
        flags=dns.flags.RD | dns.flags.AD,
    )


def strings(reply: Reply) -> list[bytes]:
    return [b"".join(rd.strings) for rd in reply.resolve().records]


@pytest.fixture
def second_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


async def test_failing_first_server_falls_back_to_the_next(
    dns_server: DnsServer, second_server: DnsServer
) -> None:
    dns_server.fail(Q, "servfail")
    second_server.set_txt(Q, "v=STSv1; id=2")
    reply = await transport(dns_server.address, second_server.address).ask(Q, TXT)
    assert strings(reply) == [b"v=STSv1; id=2"]
    assert dns_server.query_count(Q) == 1  # a server that answered SERVFAIL is not asked again


async def test_silent_first_server_falls_back_within_the_lifetime(
    dns_server: DnsServer, second_server: DnsServer
) -> None:
    dns_server.fail(Q, "drop")
    second_server.set_txt(Q, "v=STSv1; id=2")
    started = time.monotonic()
    reply = await transport(dns_server.address, second_server.address).ask(Q, TXT)
    assert strings(reply) == [b"v=STSv1; id=2"]
    assert 0.25 < time.monotonic() - started < 1.5  # one attempt timeout, then the next server


async def test_every_server_failing_names_each_answer(
    dns_server: DnsServer, second_server: DnsServer
) -> None:
    dns_server.fail(Q, "servfail")
    second_server.fail(Q, "refused")
    with pytest.raises(DnsLookupError) as info:
        await transport(dns_server.address, second_server.address).ask(Q, TXT)
    reason = info.value.reason
    assert Q in reason and "SERVFAIL" in reason and "REFUSED" in reason
    assert f"@{dns_server.address[1]}" in reason and f"@{second_server.address[1]}" in reason


async def test_unreachable_server_is_skipped(dns_server: DnsServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
    dns_server.set_txt(Q, "v=STSv1; id=1")  # the closed port answers ICMP unreachable
    started = time.monotonic()
    reply = await transport(dead, dns_server.address, attempt=1.0).ask(Q, TXT)
    assert strings(reply) == [b"v=STSv1; id=1"]
    assert time.monotonic() - started < 0.5  # skipped at once, not after an attempt timeout


async def test_silence_everywhere_ends_at_the_lifetime(dns_server: DnsServer) -> None:
    dns_server.fail(Q, "drop")
    started = time.monotonic()
    with pytest.raises(DnsLookupError, match=r"no DNS answer within 0\.7 s"):
        await transport(dns_server.address, lifetime=0.7, attempt=0.2).ask(Q, TXT)
    assert 0.6 < time.monotonic() - started < 1.5  # retried in rounds, never past the lifetime


class ForgingServer:
    """Answers each query three times: a wrong ID, garbage, then the genuine reply (RFC 5452)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.sock.getsockname()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            self.sock.sendto(self._reply(query, "v=STSv1; id=forged", wrong_id=True), peer)
            self.sock.sendto(data[:2] + b"\x81\x80garbage", peer)  # our ID, unparsable
            self.sock.sendto(self._reply(query, "v=STSv1; id=genuine"), peer)

    @staticmethod
    def _reply(query: dns.message.Message, text: str, wrong_id: bool = False) -> bytes:
        reply = dns.message.make_response(query)
        reply.answer.append(
            dns.rrset.from_text(query.question[0].name, 60, "IN", "TXT", f'"{text}"')
        )
        if wrong_id:
            reply.id = (query.id + 1) % 65536
        return reply.to_wire()

    def close(self) -> None:
        self.sock.close()


async def test_replies_with_a_wrong_id_or_garbage_are_ignored() -> None:
    forger = ForgingServer()
    try:
        reply = await transport(forger.address).ask(Q, TXT)
    finally:
        forger.close()
    assert strings(reply) == [b"v=STSv1; id=genuine"]


async def test_a_name_dnspython_cannot_encode_is_a_lookup_error() -> None:
    with pytest.raises(DnsLookupError, match="TXT"):
        await transport(("127.0.0.1", 53)).ask("a" * 64 + ".test", TXT)  # label over 63 octets


@pytest.mark.fault
async def test_tcp_closed_without_answer_falls_back_to_the_next_server(
    dns_server: DnsServer, second_server: DnsServer
) -> None:
    """A resolver at its TCP limit truncates over UDP, then closes TCP without an answer:
    dnspython raises EOFError, which must end only that server's turn (issue 11, items 2-3)."""
    dns_server.fail(Q, "tc-then-close")
    second_server.set_txt(Q, "v=STSv1; id=2")
    reply = await transport(dns_server.address, second_server.address).ask(Q, TXT)
    assert strings(reply) == [b"v=STSv1; id=2"]
    assert [q.transport for q in dns_server.queries] == ["udp", "tcp"]


@pytest.mark.fault
async def test_tcp_closed_without_answer_everywhere_is_a_lookup_error(
    dns_server: DnsServer,
) -> None:
    dns_server.fail(Q, "tc-then-close")
    with pytest.raises(DnsLookupError, match="TCP retry after truncation: EOFError"):
        await transport(dns_server.address).ask(Q, TXT)


def test_the_packed_query_is_the_one_dnspython_would_send() -> None:
    """`_Query` replaced dnspython's make_query(...).to_wire() for speed, not for content."""
    from mta_sts_policyd.net.dns_transport import _Query

    for name, rdtype in ((Q, TXT), ("mta-sts.Example.TEST", dns.rdatatype.AAAA)):
        packed = _Query(name, rdtype, dns.flags.RD | dns.flags.AD, 1232)
        made = dns.message.make_query(
            name, rdtype, use_edns=0, payload=1232, flags=dns.flags.RD | dns.flags.AD
        )
        made.id = packed.ident
        assert packed.wire == made.to_wire()
        reply = dns.message.make_response(made)
        assert packed.read(reply.to_wire()) is not None
        other = dns.message.make_response(dns.message.make_query("other.test", rdtype))
        other.id = made.id
        assert packed.read(other.to_wire()) is None  # our ID, another question


class HeaderForger(ForgingServer):
    """Sends a well-formed header with our ID and an unparsable question before the reply."""

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            self.sock.sendto(data[:2] + bytes.fromhex("818000010000000000000000ff") + b"junk", peer)
            self.sock.sendto(self._reply(query, "v=STSv1; id=genuine"), peer)


async def test_an_unparsed_reply_is_checked_when_read_and_asked_again_if_unusable() -> None:
    """ask_unparsed keeps the first datagram with our ID and a whole header (here a forged
    one); reading it finds it unusable, and the question is asked again the ordinary way."""
    forger = HeaderForger()
    try:
        dns_transport = transport(forger.address)
        unparsed = await dns_transport.ask_unparsed(Q, TXT)
        assert dns_transport.parse(unparsed) is None
        assert strings(await dns_transport.ask(Q, TXT)) == [b"v=STSv1; id=genuine"]
    finally:
        forger.close()


async def test_an_unparsed_reply_reads_like_an_asked_one(dns_server: DnsServer) -> None:
    dns_server.set_txt(Q, "v=STSv1; id=1")
    dns_transport = transport(dns_server.address)
    reply = dns_transport.parse(await dns_transport.ask_unparsed(Q, TXT))
    assert reply is not None and strings(reply) == [b"v=STSv1; id=1"]
    dns_server.fail(Q, "servfail")
    with pytest.raises(DnsLookupError, match="SERVFAIL"):  # the header's rcode is checked
        await dns_transport.ask_unparsed(Q, TXT)
