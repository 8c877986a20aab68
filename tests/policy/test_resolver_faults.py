"""Issue 11, "Answers Postfix gets": the resolver under hostile DNS and moving MX data.

Real loopback DNS and HTTPS servers, an injected clock. Part of the fault suite (docs/faults.md).
"""

from __future__ import annotations

import time

import pytest

from conftest import StsWorld
from mta_sts_policyd.postfix.policy_reply import NO_MX_MATCH
from support.resolver_world import ENFORCE, ENFORCE_REPLY, NOTFOUND, FakeClock, make_resolver

pytestmark = pytest.mark.fault

D = "example.test"
WILDCARD = "version: STSv1\nmode: enforce\nmx: *.mx.example.test\nmax_age: 86400\n"


def secure(match: str) -> bytes:
    return f"OK secure match={match} servername=hostname".encode()


async def test_too_deep_mx_is_refused_not_matched_by_the_dot_form(sts_world: StsWorld) -> None:
    """1a: the only MX is two labels under the wildcard: RFC 8461 §4.1 says no match."""
    resolver = make_resolver(sts_world, FakeClock(), exact_wildcards=True)
    sts_world.publish(D, WILDCARD)
    sts_world.dns.set_mx(D, (10, "a.b.mx.example.test."))
    assert await resolver.answer("postfix", D) == secure(NO_MX_MATCH)


async def test_mx_moved_within_the_wildcard_is_accepted_after_its_ttl(
    sts_world: StsWorld,
) -> None:
    """1b: same policy, same TXT id, the MX moves from a. to b.: once the MX answer's TTL has
    run out the watch re-reads it, and the next answer names the new host."""
    clock = FakeClock()
    resolver = make_resolver(sts_world, clock, exact_wildcards=True)
    sts_world.publish(D, WILDCARD)
    sts_world.dns.set_mx(D, (10, "a.mx.example.test."), ttl=30)
    assert await resolver.answer("postfix", D) == secure("a.mx.example.test")
    sts_world.dns.set_mx(D, (10, "b.mx.example.test."), ttl=30)
    clock.advance(20)
    assert await resolver.recheck_mx_once() == 0  # the old answer is still within its TTL
    assert await resolver.answer("postfix", D) == secure("a.mx.example.test")
    clock.advance(11)
    assert await resolver.recheck_mx_once() == 1
    assert await resolver.answer("postfix", D) == secure("b.mx.example.test")
    assert sts_world.https.request_count(f"mta-sts.{D}") == 1  # no refetch needed for it


async def test_mx_data_is_re_read_at_least_every_txt_recheck(sts_world: StsWorld) -> None:
    clock = FakeClock()
    resolver = make_resolver(sts_world, clock, exact_wildcards=True, txt_recheck=60.0)
    sts_world.publish(D, WILDCARD)
    sts_world.dns.set_mx(D, (10, "a.mx.example.test."), ttl=86400)
    await resolver.answer("postfix", D)
    sts_world.dns.set_mx(D, (10, "b.mx.example.test."), ttl=86400)
    clock.advance(61)
    assert await resolver.recheck_mx_once() == 1
    assert await resolver.answer("postfix", D) == secure("b.mx.example.test")


async def test_mx_lookup_failing_on_recheck_falls_back_to_the_dot_form(
    sts_world: StsWorld,
) -> None:
    clock = FakeClock()
    resolver = make_resolver(sts_world, clock, exact_wildcards=True)
    sts_world.publish(D, WILDCARD)
    sts_world.dns.set_mx(D, (10, "a.mx.example.test."), ttl=30)
    await resolver.answer("postfix", D)
    sts_world.dns.fail(D, "servfail", "MX")
    clock.advance(31)
    assert await resolver.recheck_mx_once() == 1
    assert await resolver.answer("postfix", D) == secure(".mx.example.test")


async def test_mx_question_truncated_then_tcp_closed_falls_back_not_empty(
    sts_world: StsWorld,
) -> None:
    """Item 2: dnspython's EOFError from the TCP retry must not crash discovery after the
    policy was stored: the answer falls back like mx-lookup-failed, never an empty payload."""
    clock = FakeClock()
    resolver = make_resolver(sts_world, clock, exact_wildcards=True)
    sts_world.publish(D, WILDCARD)
    sts_world.dns.fail(D, "tc-then-close", "MX")
    for _ in range(3):
        assert await resolver.answer("postfix", D) == secure(".mx.example.test")
        clock.advance(70)  # the TXT re-check runs again: still a whole reply
        await resolver.wait_idle()
    entry = resolver.cache.get(D)
    assert entry is not None and entry.policy is not None and entry.reply


async def test_txt_timeout_is_remembered_so_only_the_first_lookup_waits(
    sts_world: StsWorld,
) -> None:
    """Item 4: an unknown domain whose TXT question times out costs one wait, not one per
    lookup, until the failure back-off has passed."""
    clock = FakeClock()
    resolver = make_resolver(sts_world, clock, failure_backoff=300.0)
    sts_world.publish(D, ENFORCE)
    sts_world.dns.fail(f"_mta-sts.{D}", "drop")
    started = time.monotonic()
    assert await resolver.answer("postfix", D) == NOTFOUND
    assert time.monotonic() - started > 0.9  # the first lookup waited for the 1 s DNS timeout
    asked = sts_world.dns.query_count(f"_mta-sts.{D}")
    for _ in range(5):
        clock.advance(10)
        started = time.monotonic()
        assert await resolver.answer("postfix", D) == NOTFOUND
        assert time.monotonic() - started < 0.1
    assert sts_world.dns.query_count(f"_mta-sts.{D}") == asked  # no new upstream question
    sts_world.dns.remove(f"_mta-sts.{D}")
    sts_world.publish(D, ENFORCE)
    clock.advance(300)
    assert await resolver.answer("postfix", D) == ENFORCE_REPLY  # asked again after back-off


async def test_txt_timeouts_never_remove_a_known_policy(sts_world: StsWorld) -> None:
    clock = FakeClock()
    resolver = make_resolver(sts_world, clock)
    sts_world.publish(D, ENFORCE)
    assert await resolver.answer("postfix", D) == ENFORCE_REPLY
    sts_world.dns.fail(f"_mta-sts.{D}", "drop")
    for _ in range(3):
        clock.advance(61)
        assert await resolver.answer("postfix", D) == ENFORCE_REPLY
        await resolver.wait_idle()
    assert resolver.cache.get(D) is not None


def test_running_daemon_never_answers_an_empty_payload_after_an_mx_eof(
    sts_world: StsWorld,
) -> None:
    """Item 2 on the real process: the MX question is truncated over UDP and the TCP retry
    closed without an answer. Every lookup, first and repeated, gets the `.x` fallback."""
    from support.daemon_process import DaemonProcess

    sts_world.publish(D, WILDCARD)
    sts_world.dns.fail(D, "tc-then-close", "MX")
    with DaemonProcess.for_servers(sts_world.dns, sts_world.https) as process:
        process.start()
        replies = [process.query(D) for _ in range(3)]
        process.wait_for_log(r"event=mx-lookup-failed domain=example\.test")
    assert replies == [secure(".mx.example.test")] * 3


def test_running_daemon_follows_an_mx_move_within_the_wildcard(sts_world: StsWorld) -> None:
    """Item 1b on the real process: its MX watch re-reads the MX set once the answer's TTL
    (here 1 s, so the 10 s floor) has run out; no refetch and no TXT change are needed."""
    from support.daemon_process import DaemonProcess

    sts_world.publish(D, WILDCARD)
    sts_world.dns.set_mx(D, (10, "a.mx.example.test."), ttl=1)
    with DaemonProcess.for_servers(sts_world.dns, sts_world.https) as process:
        process.start()
        assert process.query(D) == secure("a.mx.example.test")
        sts_world.dns.set_mx(D, (10, "b.mx.example.test."), ttl=1)
        moved = time.monotonic()
        while process.query(D) != secure("b.mx.example.test"):
            assert time.monotonic() - moved < 20, process.log()
            time.sleep(0.5)
        process.wait_for_log(r"event=mx-changed domain=example\.test mx=b\.mx\.example\.test")
    assert sts_world.https.request_count(f"mta-sts.{D}") == 1
