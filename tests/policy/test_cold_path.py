"""A cold lookup asks in parallel what it can (issue: first lookups at the round-trip floor).

Real loopback DNS with per-name delays stands in for far-away name servers: the `_mta-sts` TXT
question and the policy host's A question leave together, the MX question runs beside the
policy fetch, and none of it changes what the answer is.
"""

from __future__ import annotations

import time

import pytest
import trustme

from conftest import StsWorld
from mta_sts_policyd.discovery.client import Discovery
from support.dns_server import DnsServer
from support.https_server import HttpsServer
from support.resolver_world import ENFORCE, ENFORCE_REPLY, NOTFOUND, FakeClock, make_resolver

D = "example.test"
WILDCARD = "version: STSv1\nmode: enforce\nmx: *.mx.example.test\nmax_age: 86400\n"
DELAY = 0.4


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def timed_answer(
    world: StsWorld, clock: FakeClock, **settings: object
) -> tuple[bytes, float]:
    resolver = make_resolver(world, clock, **settings)
    started = time.monotonic()
    reply = await resolver.answer("postfix", D)
    elapsed = time.monotonic() - started
    await resolver.wait_idle()
    return reply, elapsed


async def test_txt_and_the_policy_host_address_are_asked_together(
    sts_world: StsWorld, dns_server: DnsServer, clock: FakeClock
) -> None:
    sts_world.publish(D, ENFORCE)
    dns_server.delay(f"_mta-sts.{D}", DELAY)
    dns_server.delay(f"mta-sts.{D}", DELAY)
    reply, elapsed = await timed_answer(sts_world, clock)
    assert reply == ENFORCE_REPLY
    # One round trip for TXT and A, at most the 50 ms resolution delay for AAAA; asked one
    # after the other they take two.
    assert elapsed < 2 * DELAY - 0.1, elapsed
    assert dns_server.query_count(f"mta-sts.{D}", "A") == 1


async def test_a_domain_without_policy_costs_one_early_question_and_no_aaaa(
    sts_world: StsWorld, dns_server: DnsServer, clock: FakeClock
) -> None:
    dns_server.delay(f"_mta-sts.{D}", 0.2)  # the early A question has left by then
    reply, _ = await timed_answer(sts_world, clock)
    assert reply == NOTFOUND
    assert dns_server.query_count(f"_mta-sts.{D}", "TXT") == 1
    assert dns_server.query_count(f"mta-sts.{D}", "A") == 1
    assert dns_server.query_count(f"mta-sts.{D}", "AAAA") == 0
    assert dns_server.query_count(D, "MX") == 0


async def test_a_policy_host_that_connects_on_ipv4_costs_no_aaaa_question(
    sts_world: StsWorld, dns_server: DnsServer, clock: FakeClock
) -> None:
    """AAAA is the fallback of the early A answer: asked only when IPv4 fails."""
    sts_world.publish(D, ENFORCE)
    dns_server.set_aaaa(f"mta-sts.{D}", "::1")
    reply, _ = await timed_answer(sts_world, clock)
    assert reply == ENFORCE_REPLY
    assert dns_server.query_count(f"mta-sts.{D}", "A") == 1
    assert dns_server.query_count(f"mta-sts.{D}", "AAAA") == 0


async def test_slow_mx_runs_beside_the_fetch_not_after_it(
    sts_world: StsWorld, dns_server: DnsServer, clock: FakeClock
) -> None:
    sts_world.publish(D, WILDCARD)
    dns_server.set_mx(D, (10, "a.mx.example.test"))
    dns_server.delay(D, DELAY)
    dns_server.delay(f"mta-sts.{D}", DELAY)
    reply, elapsed = await timed_answer(sts_world, clock, exact_wildcards=True)
    assert reply == b"OK secure match=a.mx.example.test servername=hostname"
    assert elapsed < 2 * DELAY - 0.1, elapsed


async def test_the_mx_question_asked_beside_the_fetch_is_read_not_asked_again(
    sts_world: StsWorld, dns_server: DnsServer, clock: FakeClock
) -> None:
    """Its answer is parsed only when the policy needs it (a `*.` pattern), never re-asked."""
    sts_world.publish(D, WILDCARD)
    dns_server.set_mx(D, (10, "a.mx.example.test"))
    reply, _ = await timed_answer(sts_world, clock, exact_wildcards=True)
    assert reply == b"OK secure match=a.mx.example.test servername=hostname"
    assert dns_server.query_count(D, "MX") == 1
    sts_world.publish("other.test", ENFORCE)
    resolver = make_resolver(sts_world, clock, exact_wildcards=True)
    assert (await resolver.answer("postfix", "other.test")).startswith(b"OK secure")
    await resolver.wait_idle()
    assert dns_server.query_count("other.test", "MX") == 1  # asked on speculation, unread


async def test_slow_mx_does_not_delay_the_txt_answer(
    sts_world: StsWorld, dns_server: DnsServer, clock: FakeClock
) -> None:
    sts_world.publish(D, "version: STSv1\nmode: none\nmax_age: 86400\n")
    dns_server.delay(D, 5.0)  # MX of a `none` policy is asked early, never waited for
    reply, elapsed = await timed_answer(sts_world, clock, exact_wildcards=True)
    assert reply == NOTFOUND
    assert elapsed < 2.0, elapsed


async def test_a_failing_mx_lookup_still_yields_the_policy(
    sts_world: StsWorld, dns_server: DnsServer, clock: FakeClock
) -> None:
    sts_world.publish(D, WILDCARD)
    dns_server.fail(D, "servfail", "MX")
    reply, _ = await timed_answer(sts_world, clock, exact_wildcards=True)
    assert reply.startswith(b"OK secure match=")


@pytest.mark.parametrize("early", [False, True], ids=["fetch-alone", "after-early-a"])
async def test_an_ipv6_policy_host_is_reached_when_ipv4_refuses(
    dns_server: DnsServer, trust_ca: trustme.CA, early: bool
) -> None:
    """A and AAAA raced (a fetch alone), or after the early A answer (the cold path: TXT and A
    together), where AAAA is only asked because IPv4 refused: once either way."""
    try:
        https = HttpsServer(trust_ca, host="::1").__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        https.set_policy(D, ENFORCE)
        dns_server.set_txt(f"_mta-sts.{D}", "v=STSv1; id=1;")
        dns_server.set_a(f"mta-sts.{D}", "127.0.0.2")  # nothing listens there: refused at once
        dns_server.set_aaaa(f"mta-sts.{D}", "::1")
        discovery = Discovery(
            nameservers=[dns_server.nameserver], ca_file=https.ca_pem_path, https_port=https.port
        )
        if early:
            await discovery.lookup_txt(D, fetch_likely=True)
        fetched = await discovery.fetch_policy(D)
        await discovery.aclose()
    finally:
        https.__exit__(None, None, None)
    assert fetched.policy.mx == ("mail.example.test",)
    assert dns_server.query_count(f"mta-sts.{D}", "A") == 1
    assert dns_server.query_count(f"mta-sts.{D}", "AAAA") == 1
