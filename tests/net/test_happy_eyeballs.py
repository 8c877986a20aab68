"""RFC 8305 connection racing: address order, the resolution delay, staggered attempts."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.errors import DnsLookupError
from mta_sts_policyd.net.happy_eyeballs import (
    AllAttemptsFailed,
    NoAddresses,
    connect_first,
    connect_happy,
    connect_v4_first,
    interleave,
    resolve_both,
)

V6 = ["2001:db8::1", "2001:db8::2"]
V4 = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


def test_interleave_alternates_families_ipv6_first() -> None:
    assert interleave(V6, V4) == [
        "2001:db8::1",
        "192.0.2.1",
        "2001:db8::2",
        "192.0.2.2",
        "192.0.2.3",
    ]
    assert interleave([], V4) == V4
    assert interleave(V6, []) == V6


@given(st.lists(st.text(min_size=1), max_size=6), st.lists(st.text(min_size=1), max_size=6))
def test_interleave_keeps_every_address_and_each_familys_order(
    v6: list[str], v4: list[str]
) -> None:
    mixed = interleave(v6, v4)
    assert sorted(mixed) == sorted(v6 + v4)
    assert [a for a in mixed if a in v6 and a not in v4] == [a for a in v6 if a not in v4]
    if v6:
        assert mixed[0] == v6[0]


async def answer(value: list[str], after: float) -> list[str]:
    await asyncio.sleep(after)
    return value


async def fail(after: float) -> list[str]:
    await asyncio.sleep(after)
    raise DnsLookupError("SERVFAIL")


async def test_aaaa_within_the_resolution_delay_is_used_and_preferred() -> None:
    assert await resolve_both(answer(V4, 0), answer(V6, 0.02), 0.2) == interleave(V6, V4)


async def test_late_aaaa_is_not_waited_for_beyond_the_resolution_delay() -> None:
    started = time.monotonic()
    assert await resolve_both(answer(V4, 0), answer(V6, 5), 0.05) == V4
    assert time.monotonic() - started < 1.0


async def test_empty_a_waits_for_aaaa() -> None:
    assert await resolve_both(answer([], 0), answer(V6, 0.1), 0.01) == V6


async def test_one_family_failing_is_no_failure_while_the_other_has_addresses() -> None:
    assert await resolve_both(fail(0), answer(V6, 0.01)) == V6
    assert await resolve_both(answer(V4, 0.01), fail(0)) == V4


async def test_no_addresses_carries_the_dns_failure() -> None:
    with pytest.raises(NoAddresses) as caught:
        await resolve_both(fail(0), answer([], 0))
    assert caught.value.failure is not None and caught.value.failure.reason == "SERVFAIL"
    with pytest.raises(NoAddresses) as empty:
        await resolve_both(answer([], 0), answer([], 0))
    assert empty.value.failure is None


class Attempts:
    """Fake connect: per address a delay and an outcome; records start times and closes."""

    def __init__(self, plan: dict[str, tuple[float, bool]]) -> None:
        self.plan = plan
        self.started: dict[str, float] = {}
        self.closed: list[str] = []
        self.t0 = time.monotonic()

    async def connect(self, address: str) -> str:
        self.started[address] = time.monotonic() - self.t0
        delay, ok = self.plan[address]
        await asyncio.sleep(delay)
        if not ok:
            raise OSError(f"refused by {address}")
        return address

    async def close(self, connection: str) -> None:
        self.closed.append(connection)


async def test_a_silent_address_costs_the_attempt_delay_not_a_timeout() -> None:
    attempts = Attempts({"a": (30.0, True), "b": (0.0, True)})
    assert await connect_first(["a", "b"], attempts.connect, attempts.close, 0.1) == "b"
    assert 0.08 <= attempts.started["b"] < 1.0


async def test_a_refused_address_moves_on_at_once() -> None:
    attempts = Attempts({"a": (0.0, False), "b": (0.0, True)})
    assert await connect_first(["a", "b"], attempts.connect, attempts.close, 5.0) == "b"
    assert attempts.started["b"] < 1.0


async def test_every_attempt_failing_names_each_address_in_order() -> None:
    attempts = Attempts({"a": (0.0, False), "b": (0.01, False)})
    with pytest.raises(AllAttemptsFailed) as caught:
        await connect_first(["a", "b"], attempts.connect, attempts.close, 0.05)
    assert caught.value.problems == ["a: refused by a", "b: refused by b"]


async def test_the_first_connection_wins_and_no_other_is_left_open() -> None:
    attempts = Attempts({"a": (0.3, True), "b": (0.05, True), "c": (0.0, True)})
    assert await connect_first(["a", "b", "c"], attempts.connect, attempts.close, 0.01) == "c"
    assert set(attempts.closed) <= {"a", "b"}  # cancelled before connecting, or closed


async def test_two_connections_done_together_keep_one_and_close_the_other() -> None:
    attempts = Attempts({"a": (0.0, True), "b": (0.0, True)})

    async def instant(address: str) -> str:
        attempts.started[address] = 0.0
        return address

    winner = await connect_first(["a", "b"], instant, attempts.close, 0.0)
    assert attempts.closed == ([] if len(attempts.started) == 1 else [{"a": "b", "b": "a"}[winner]])


async def test_attempts_done_in_the_same_turn_prefer_the_earlier_address() -> None:
    """A loop delayed past the attempt delay sees several connections at once: order decides."""
    closed: list[str] = []

    async def connect(address: str) -> str:
        return address

    async def close(connection: str) -> None:
        closed.append(connection)

    # attempt delay 0: every attempt starts before any has run, so all finish in one turn
    assert await connect_first(["c", "a", "b"], connect, close, 0.0) == "c"
    assert sorted(closed) in ([], ["a"], ["a", "b"], ["b"])


async def test_ipv6_answers_that_come_late_are_the_fallback_when_ipv4_fails() -> None:
    """Resolution delay 0 (the A answer came early): IPv4 is tried at once; when it refuses,
    the AAAA answer that arrived meanwhile is used."""
    attempts = Attempts({"192.0.2.1": (0.0, False), "2001:db8::1": (0.0, True)})
    got = await connect_happy(
        answer(["192.0.2.1"], 0),
        answer(["2001:db8::1"], 0.1),
        attempts.connect,
        attempts.close,
        0.0,
    )
    assert got == "2001:db8::1"
    assert list(attempts.started) == ["192.0.2.1", "2001:db8::1"]


async def test_no_resolution_delay_means_ipv4_at_once() -> None:
    attempts = Attempts({"192.0.2.1": (0.0, True), "2001:db8::1": (0.0, True)})
    started = time.monotonic()
    got = await connect_happy(
        answer(["192.0.2.1"], 0),
        answer(["2001:db8::1"], 2.0),
        attempts.connect,
        attempts.close,
        0.0,
    )
    assert got == "192.0.2.1" and time.monotonic() - started < 1.0


async def test_every_address_failing_names_all_of_them() -> None:
    attempts = Attempts({"192.0.2.1": (0.0, False), "2001:db8::1": (0.0, False)})
    with pytest.raises(AllAttemptsFailed) as caught:
        await connect_happy(
            answer(["192.0.2.1"], 0),
            answer(["2001:db8::1"], 0.05),
            attempts.connect,
            attempts.close,
            0.0,
        )
    assert len(caught.value.problems) == 2


class V6Reads:
    """The AAAA answer of connect_v4_first, counting whether it was read at all."""

    def __init__(self, addresses: list[str] | None) -> None:
        self.addresses = addresses
        self.reads = 0

    async def read(self) -> list[str]:
        self.reads += 1
        if self.addresses is None:
            raise DnsLookupError("SERVFAIL")
        return self.addresses


async def test_ipv4_first_never_reads_the_aaaa_answer_when_ipv4_connects() -> None:
    attempts = Attempts({"192.0.2.1": (0.0, True), "2001:db8::1": (0.0, True)})
    v6 = V6Reads(["2001:db8::1"])
    got = await connect_v4_first(
        answer(["192.0.2.1"], 0), v6.read, attempts.connect, attempts.close
    )
    assert got == "192.0.2.1" and v6.reads == 0


async def test_ipv4_first_falls_back_to_ipv6_when_ipv4_refuses_or_has_none() -> None:
    attempts = Attempts({"192.0.2.1": (0.0, False), "2001:db8::1": (0.0, True)})
    got = await connect_v4_first(
        answer(["192.0.2.1"], 0), V6Reads(["2001:db8::1"]).read, attempts.connect, attempts.close
    )
    assert got == "2001:db8::1"
    got = await connect_v4_first(
        fail(0), V6Reads(["2001:db8::1"]).read, attempts.connect, attempts.close
    )
    assert got == "2001:db8::1"


async def test_ipv4_first_names_every_failure() -> None:
    attempts = Attempts({"192.0.2.1": (0.0, False), "2001:db8::1": (0.0, False)})
    with pytest.raises(AllAttemptsFailed) as caught:
        await connect_v4_first(
            answer(["192.0.2.1"], 0),
            V6Reads(["2001:db8::1"]).read,
            attempts.connect,
            attempts.close,
        )
    assert caught.value.problems == [
        "192.0.2.1: refused by 192.0.2.1",
        "[2001:db8::1]: refused by 2001:db8::1",
    ]
    with pytest.raises(AllAttemptsFailed):  # IPv4 refused, no AAAA answer: IPv4's failure
        await connect_v4_first(
            answer(["192.0.2.1"], 0), V6Reads(None).read, attempts.connect, attempts.close
        )
    with pytest.raises(NoAddresses) as none:  # no address at all: the first DNS failure
        await connect_v4_first(fail(0), V6Reads([]).read, attempts.connect, attempts.close)
    assert none.value.failure is not None


async def test_a_single_refused_address_is_named() -> None:
    attempts = Attempts({"a": (0.0, False)})
    with pytest.raises(AllAttemptsFailed) as caught:
        await connect_first(["a"], attempts.connect, attempts.close)
    assert caught.value.problems == ["a: refused by a"]


class AskedLater:
    """The AAAA question of connect_v4_first: when it was asked, and its answer's delay."""

    def __init__(self, addresses: list[str], after: float = 0.0) -> None:
        self.addresses = addresses
        self.after = after
        self.asked_at: float | None = None
        self.t0 = time.monotonic()

    async def ask(self) -> list[str]:
        self.asked_at = time.monotonic() - self.t0
        await asyncio.sleep(self.after)
        return self.addresses


async def test_a_silent_ipv4_brings_in_ipv6_after_the_attempt_delay() -> None:
    """IPv4 neither connects nor fails (SYNs dropped): AAAA is asked after the attempt delay,
    not after the fetch's deadline, and IPv6 wins."""
    attempts = Attempts({"192.0.2.1": (30.0, True), "2001:db8::1": (0.0, True)})
    v6 = AskedLater(["2001:db8::1"])
    started = time.monotonic()
    got = await connect_v4_first(
        answer(["192.0.2.1"], 0), v6.ask, attempts.connect, attempts.close, 0.1
    )
    assert got == "2001:db8::1"
    assert v6.asked_at is not None and 0.08 <= v6.asked_at < 1.0
    assert time.monotonic() - started < 1.0


async def test_a_slow_ipv4_that_connects_first_still_wins_and_ipv6_is_dropped() -> None:
    attempts = Attempts({"192.0.2.1": (0.3, True), "2001:db8::1": (5.0, True)})
    v6 = AskedLater(["2001:db8::1"])
    got = await connect_v4_first(
        answer(["192.0.2.1"], 0), v6.ask, attempts.connect, attempts.close, 0.1
    )
    assert got == "192.0.2.1"
    assert v6.asked_at is not None  # asked after the delay, its attempt cancelled
    assert "2001:db8::1" in attempts.started and attempts.closed == []


async def test_ipv4_that_connects_within_the_delay_never_asks_aaaa() -> None:
    attempts = Attempts({"192.0.2.1": (0.05, True)})
    v6 = AskedLater(["2001:db8::1"])
    got = await connect_v4_first(
        answer(["192.0.2.1"], 0), v6.ask, attempts.connect, attempts.close, 0.5
    )
    assert got == "192.0.2.1" and v6.asked_at is None


async def test_an_aaaa_answer_later_than_the_resolution_delay_races_a_silent_ipv4() -> None:
    attempts = Attempts({"192.0.2.1": (30.0, True), "2001:db8::1": (0.0, True)})
    started = time.monotonic()
    got = await connect_happy(
        answer(["192.0.2.1"], 0),
        answer(["2001:db8::1"], 0.1),
        attempts.connect,
        attempts.close,
        0.0,
    )
    assert got == "2001:db8::1"
    assert time.monotonic() - started < 2.0  # the attempt delay (0.25 s), not IPv4's 30 s
