"""The reply memo: repeat requests answered from their bytes, never differently from the full path.

Against the real resolver (loopback DNS and HTTPS, injected clock) for the lookup rules it must
not bypass (RFC 8461 §5.1 re-check replacement, RFC 8461 §3.3, §10.2 failures counted per lookup
expiry, eviction, reload), as a hypothesis model for arbitrary sequences of cache changes, and on
the socketmap server for ordering (docs/conformance.md: PF-socketmap-sequential) and pipelining.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import StsWorld
from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache
from mta_sts_policyd.policy.reply_memo import MIN_MEMO_LIMIT, ReplyMemo
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.policy.stats import LookupStats
from mta_sts_policyd.postfix.server import SocketmapServer
from mta_sts_policyd.postfix.socketmap import MAX_REPLY, encode_netstring
from mta_sts_policyd.sts.policy import parse_policy
from support.resolver_world import (
    ENFORCE,
    ENFORCE_REPLY,
    NONE,
    NOTFOUND,
    TESTING,
    FakeClock,
    make_resolver,
)
from support.socketmap_fakes import Answers, read_replies

RAW = encode_netstring(b"postfix example.test")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def resolver(sts_world: StsWorld, clock: FakeClock) -> AsyncIterator[PolicyResolver]:
    r = make_resolver(sts_world, clock)
    yield r
    await r.wait_idle()


async def learnt(resolver: PolicyResolver, domain: str = "example.test") -> bytes | None:
    """Answer twice through the full path (fetch, then a cached answer that teaches the memo)."""
    await resolver.answer("postfix", domain)
    await resolver.answer("postfix", domain)
    return resolver.memo.reply(encode_netstring(f"postfix {domain}".encode()))


async def test_repeat_request_answered_from_memo_with_cache_hit_side_effects(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE)
    assert await learnt(resolver) == encode_netstring(ENFORCE_REPLY)
    stats = resolver.stats
    assert (stats.cache_hits(), stats.answers_by_class()["enforce"], stats.memo_hits) == (2, 3, 1)
    clock.advance(5)
    assert resolver.memo.reply(RAW) == encode_netstring(ENFORCE_REPLY)
    entry = resolver.cache.get("example.test")
    assert entry is not None and entry.last_used == clock.now  # the refresh loop sees it in use
    counts, _ = stats.latency()
    assert counts[0] >= 2  # memo answers in the lowest latency bucket
    assert resolver.memo.reply(encode_netstring(b"postfix other.test")) is None


async def test_other_spellings_and_map_names_are_learnt_separately(
    resolver: PolicyResolver, sts_world: StsWorld
) -> None:
    sts_world.publish("example.test", ENFORCE)
    await learnt(resolver)
    # RFC 8461 §3.4; PF-socketmap-request
    for name, key in (("other-map", "example.test"), ("postfix", "EXAMPLE.test.")):
        raw = encode_netstring(f"{name} {key}".encode())
        assert resolver.memo.reply(raw) is None
        assert await resolver.answer(name, key) == ENFORCE_REPLY
        assert resolver.memo.reply(raw) == encode_netstring(ENFORCE_REPLY)


async def test_due_txt_recheck_goes_through_the_full_path(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE)
    await learnt(resolver)
    sts_world.publish("example.test", NONE, txt="v=STSv1; id=2")
    clock.advance(61)  # txt_recheck default 60 s
    assert resolver.memo.reply(RAW) is None  # the memo never skips a due re-check
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY  # starts it
    await resolver.wait_idle()
    assert resolver.memo.reply(RAW) is None  # RFC 8461 §5: the none policy replaced the entry
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    assert resolver.memo.reply(RAW) is None  # NOTFOUND answers are not learnt


async def test_expiry_is_never_answered_from_memo(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE.replace("86400", "30"))  # shorter than re-check
    await learnt(resolver)
    clock.advance(29)
    assert resolver.memo.reply(RAW) == encode_netstring(ENFORCE_REPLY)
    clock.advance(1)
    assert resolver.memo.reply(RAW) is None


async def test_entry_with_a_failure_in_force_is_answered_by_the_full_path(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE)
    await learnt(resolver)
    failures: list[str] = []
    resolver.on_failure = lambda entry, *_: failures.append(entry.domain)
    sts_world.publish("example.test", ENFORCE, txt="v=STSv1; id=2", status=503)
    clock.advance(61)
    await resolver.answer("postfix", "example.test")
    await resolver.wait_idle()  # the new id's fetch failed: cached policy, failure in force
    entry = resolver.cache.get("example.test")
    assert entry is not None and entry.failure is not None
    for _ in range(3):
        assert resolver.memo.reply(RAW) is None
        assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    assert failures.count("example.test") >= 3  # counted per lookup for TLS-RPT (RFC 8461 §6)


async def test_testing_mode_is_not_learnt_so_the_shadow_sees_every_answer(
    resolver: PolicyResolver, sts_world: StsWorld
) -> None:
    sts_world.publish("example.test", TESTING)
    seen: list[str] = []
    resolver.on_policy = lambda entry: seen.append(entry.domain)
    assert await learnt(resolver) is None
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    assert len(seen) == 3


async def test_evicted_or_purged_entry_is_not_answered(
    resolver: PolicyResolver, sts_world: StsWorld
) -> None:
    sts_world.publish("example.test", ENFORCE)
    await learnt(resolver)
    resolver.cache.remove("example.test")  # what `cache purge` and hot-set eviction do
    assert resolver.memo.reply(RAW) is None


async def test_reload_rendering_change_is_never_answered_stale(
    resolver: PolicyResolver, sts_world: StsWorld
) -> None:
    sts_world.publish("example.test", ENFORCE)
    old = await learnt(resolver)
    resolver.settings = replace(resolver.settings, sts_attributes=True, txt_recheck=5.0)
    resolver.rerender_all()
    assert resolver.memo.reply(RAW) is None
    reply = await resolver.answer("postfix", "example.test")
    assert reply != ENFORCE_REPLY and b"policy_type=sts" in reply
    assert resolver.memo.reply(RAW) == encode_netstring(reply) != old
    assert resolver.memo.txt_recheck == 5.0


# --- the memo alone: an oracle for arbitrary sequences of cache changes ------------------------

POLICY = parse_policy(ENFORCE.encode())
OTHER = parse_policy(TESTING.encode())


def entry_at(now: float, reply: bytes = ENFORCE_REPLY, **fields: object) -> CacheEntry:
    values: dict[str, object] = {
        "policy_id": "1",
        "policy": POLICY,
        "fetched_at": now,
        "expires_at": now + 86400,
        "txt_checked_at": now,
        "reply": reply,
    }
    values.update(fields)
    return CacheEntry("example.test", **values)  # type: ignore[arg-type]


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 200)),
        st.tuples(st.just("learn"), st.just(0.0)),
        st.tuples(st.just("replace"), st.just(0.0)),
        st.tuples(st.just("rerender"), st.just(0.0)),
        st.tuples(st.just("fail"), st.just(0.0)),
        st.tuples(st.just("recover"), st.just(0.0)),
        st.tuples(st.just("testing"), st.just(0.0)),
        st.tuples(st.just("remove"), st.just(0.0)),
        st.tuples(st.just("rechecked"), st.just(0.0)),
        st.tuples(st.just("expire_soon"), st.floats(0, 100)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_memo_answer_is_always_what_the_cache_would_answer_without_due_work(
    ops: list[tuple[str, float]],
) -> None:
    clock = FakeClock()
    cache = PolicyCache(None)
    memo = ReplyMemo(cache, LookupStats(), clock, txt_recheck=60.0)
    cache.put(entry_at(clock.now))
    for op, value in ops:
        current = cache.get("example.test")
        if op == "advance":
            clock.advance(value)
        elif op == "learn" and current is not None and current.valid(clock.now):
            memo.learn("postfix", "example.test", current)
        elif op == "replace":
            cache.put(entry_at(clock.now))
        elif op == "rerender" and current is not None:
            current.reply = bytes(bytearray(current.reply))  # equal bytes, new object
        elif op == "fail" and current is not None:
            current.failure = ("sts-webpki-invalid", "test")  # type: ignore[assignment]
        elif op == "recover" and current is not None:
            current.failure = None
        elif op == "testing" and current is not None:
            current.policy = OTHER
            current.reply = NOTFOUND
        elif op == "remove":
            cache.remove("example.test")
        elif op == "rechecked" and current is not None:
            current.txt_checked_at = clock.now  # the TXT re-check finished: id unchanged
        elif op == "expire_soon" and current is not None:
            current.expires_at = clock.now + value
        framed = memo.reply(RAW)
        if framed is None:
            continue
        entry = cache.get("example.test")
        assert entry is not None and entry.valid(clock.now)
        assert entry.policy is POLICY and entry.failure is None
        assert clock.now - entry.txt_checked_at < 60.0  # no re-check was due
        assert framed == encode_netstring(entry.reply)


@pytest.mark.parametrize("memory_entries", [10, 3000])
def test_memo_is_bounded_by_the_memory_set_and_pins_no_entry(memory_entries: int) -> None:
    clock = FakeClock()
    cache = PolicyCache(None, memory_entries=memory_entries)
    memo = ReplyMemo(cache, LookupStats(), clock, txt_recheck=60.0)
    limit = max(MIN_MEMO_LIMIT, memory_entries)
    first = entry_at(clock.now)
    cache.put(first)
    references = sys.getrefcount(first)
    memo.learn("postfix", first.domain, first)
    assert sys.getrefcount(first) == references  # the memo holds its reply, not the entry
    for i in range(limit + 5):
        entry = replace(entry_at(clock.now), domain=f"d{i}.test")
        cache.put(entry)  # pushes `first` out of the memory set
        memo.learn("postfix", f"d{i}.test", entry)
    assert 0 < len(memo) <= limit


def test_oversized_reply_is_not_learnt_so_the_connection_can_replace_it() -> None:
    clock = FakeClock()
    cache = PolicyCache(None)
    memo = ReplyMemo(cache, LookupStats(), clock, txt_recheck=60.0)
    entry = entry_at(clock.now, reply=b"OK secure match=" + b"m" * MAX_REPLY)
    cache.put(entry)
    memo.learn("postfix", "example.test", entry)
    assert len(memo) == 0


def test_a_key_the_client_could_not_have_sent_is_not_learnt() -> None:
    clock = FakeClock()
    cache = PolicyCache(None)
    memo = ReplyMemo(cache, LookupStats(), clock, txt_recheck=60.0)
    entry = entry_at(clock.now)
    cache.put(entry)
    memo.learn("post fix", "example.test", entry)  # parse_request splits at the first space
    assert len(memo) == 0


# --- on the server: the memo never reorders or swallows requests ------------------------------


class StubMemo:
    def __init__(self) -> None:
        self.asked: list[bytes] = []

    def __call__(self, request: bytes) -> bytes | None:
        self.asked.append(request)
        return encode_netstring(b"OK memo") if request == RAW else None


@pytest.fixture
async def memo_server() -> AsyncIterator[tuple[SocketmapServer, StubMemo, tuple[str, int]]]:
    stub = StubMemo()
    srv = SocketmapServer(Answers(), idle_timeout=5.0, fast_reply=stub)
    address = await srv.listen_tcp("127.0.0.1", 0)
    yield srv, stub, address
    await srv.close(drain_deadline=0.5)


async def test_memo_answer_waits_behind_a_slow_answer_on_the_same_connection(
    memo_server: tuple[SocketmapServer, StubMemo, tuple[str, int]],
) -> None:
    _, stub, address = memo_server
    reader, writer = await asyncio.open_connection(*address)
    writer.write(encode_netstring(b"postfix slow.example"))
    await writer.drain()
    await asyncio.sleep(0.01)  # the slow answer is in flight
    writer.write(RAW)
    # Queued behind the slow answer, so the full path answered it (Answers: NOTFOUND).
    assert await read_replies(reader, 2) == [b"OK slow.example", NOTFOUND]
    assert RAW not in stub.asked
    writer.write(RAW)
    assert await read_replies(reader, 1) == [b"OK memo"]
    assert stub.asked == [encode_netstring(b"postfix slow.example"), RAW]
    writer.close()


async def test_pipelined_and_split_requests_use_the_full_path(
    memo_server: tuple[SocketmapServer, StubMemo, tuple[str, int]],
) -> None:
    _, stub, address = memo_server
    reader, writer = await asyncio.open_connection(*address)
    writer.write(RAW + RAW)  # two requests in one segment: not a memo key
    assert await read_replies(reader, 2) == [NOTFOUND, NOTFOUND]  # Answers has no such key
    writer.write(RAW[:5])
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(RAW[5:])  # the tail of a split request is not a memo key either
    assert await read_replies(reader, 1) == [NOTFOUND]
    assert RAW not in stub.asked
    writer.close()
