"""The RFC 8461 §3.3/§5.1 cache state machine against real loopback DNS and HTTPS servers.

Time is injected (FakeClock) so expiry, back-off, re-check and refresh rules are exact.
Row ids are those of docs/conformance.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import StsWorld
from mta_sts_policyd.policy.cache import CacheEntry, PolicyStore, StoredFilter
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.policy.store.sqlite import RefreshFacts
from mta_sts_policyd.sts.policy import parse_policy
from support.dns_server import tlsa
from support.resolver_world import (
    ENFORCE,
    ENFORCE_REPLY,
    NONE,
    NOTFOUND,
    T0,
    TESTING,
    FakeClock,
    make_resolver,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def a_test_evicted_to_disk(
    world: StsWorld, clock: FakeClock, tmp_path: Path
) -> PolicyResolver:
    """A one-entry hot set: a.test then b.test fetched and flushed, so a.test is on disk only."""
    resolver = make_resolver(world, clock, store=tmp_path / "p.sqlite", memory_entries=1)
    for domain in ("a.test", "b.test"):
        world.publish(domain, ENFORCE)
        await resolver.answer("postfix", domain)
    resolver.cache.write_batch(*resolver.cache.take_batch())
    return resolver


@pytest.fixture
async def resolver(sts_world: StsWorld, clock: FakeClock) -> AsyncIterator[PolicyResolver]:
    r = make_resolver(sts_world, clock)
    yield r
    await r.wait_idle()


def counts(world: StsWorld, domain: str = "example.test") -> tuple[int, int]:
    return world.dns.query_count(f"_mta-sts.{domain}"), world.https.request_count(
        f"mta-sts.{domain}"
    )


async def test_no_txt_record_notfound_and_negatively_cached(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    clock.advance(10)
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    assert counts(sts_world) == (1, 0)  # second answer from the negative cache


async def test_enforce_policy_then_answered_from_memory(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE)
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    # RFC 8461 §3.4; PF-key-forms
    for key in ("example.test", "EXAMPLE.test.", "[example.test]:25"):
        assert await resolver.answer("postfix", key) == ENFORCE_REPLY
    assert counts(sts_world) == (1, 1)


async def test_parent_keys_never_looked_up(resolver: PolicyResolver, sts_world: StsWorld) -> None:
    sts_world.publish("example.test", ENFORCE)
    assert await resolver.answer("postfix", ".example.test") == NOTFOUND
    assert await resolver.answer("postfix", "[192.0.2.1]:25") == NOTFOUND  # RFC 8461 §3.4
    assert counts(sts_world) == (0, 0)


async def test_testing_and_none_answer_notfound(
    resolver: PolicyResolver, sts_world: StsWorld
) -> None:
    sts_world.publish("t.test", TESTING)
    sts_world.publish("n.test", NONE)
    assert await resolver.answer("postfix", "t.test") == NOTFOUND
    assert await resolver.answer("postfix", "n.test") == NOTFOUND
    assert resolver.cache.get("t.test") is not None  # cached, not negative


async def test_expiry_counts_from_fetch_not_txt(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE.replace("86400", "600"))
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    clock.advance(300)
    await resolver.answer("postfix", "example.test")  # background TXT re-check, same id
    await resolver.wait_idle()
    assert counts(sts_world) == (2, 1)  # RFC 8461 §5.1: unchanged id, unexpired -> no fetch
    clock.advance(301)  # T+601: expired although the TXT id never changed
    sts_world.https.set_policy("example.test", b"", status=500)
    # RFC 8461 §5.1 -> RFC 8461 §3.3
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    assert counts(sts_world) == (3, 2)


async def test_new_id_triggers_refetch_in_background(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE)
    await resolver.answer("postfix", "example.test")
    sts_world.publish("example.test", NONE, txt="v=STSv1; id=2")
    clock.advance(61)  # txt_recheck default 60 s
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY  # never waits
    await resolver.wait_idle()
    assert await resolver.answer("postfix", "example.test") == NOTFOUND  # RFC 8461 §5 none replaces
    entry = resolver.cache.get("example.test")
    assert entry is not None and entry.policy_id == "2"


async def test_new_id_fetch_fails_keeps_policy_and_backs_off(
    resolver: PolicyResolver,
    sts_world: StsWorld,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sts_world.publish("example.test", ENFORCE)
    await resolver.answer("postfix", "example.test")
    sts_world.publish("example.test", ENFORCE, txt="v=STSv1; id=2", status=503)
    caplog.set_level(logging.WARNING)
    for _ in range(5):  # every minute for 5 lookups: one attempt for id 2 within 5 minutes
        clock.advance(61)
        assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
        await resolver.wait_idle()
    assert counts(sts_world)[1] == 2
    assert "policy-fetch-failed domain=example.test" in caplog.text  # RFC 8461 §10.2 warning
    clock.advance(61)  # > 5 min after the failure: retry
    await resolver.answer("postfix", "example.test")
    await resolver.wait_idle()
    assert counts(sts_world)[1] == 3


async def test_no_cache_fetch_fails_notfound(resolver: PolicyResolver, sts_world: StsWorld) -> None:
    sts_world.publish("example.test", ENFORCE, status=404)
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    assert counts(sts_world)[1] == 1  # failure time recorded: no second fetch for id 1


async def test_txt_removed_policy_still_applies(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE)
    await resolver.answer("postfix", "example.test")
    sts_world.dns.remove("_mta-sts.example.test")
    clock.advance(3600)
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    await resolver.wait_idle()
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY


@pytest.mark.parametrize("failure", ["servfail", "drop"])
async def test_dns_failure_serves_cache_or_notfound(
    sts_world: StsWorld, clock: FakeClock, failure: str
) -> None:
    resolver = make_resolver(sts_world, clock)
    sts_world.publish("example.test", ENFORCE)
    sts_world.publish("other.test", ENFORCE)
    await resolver.answer("postfix", "example.test")
    sts_world.dns.fail("_mta-sts.example.test", failure)  # type: ignore[arg-type]
    sts_world.dns.fail("_mta-sts.other.test", failure)  # type: ignore[arg-type]
    clock.advance(120)
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    assert await resolver.answer("postfix", "other.test") == NOTFOUND  # never TEMP
    await resolver.wait_idle()


async def test_two_sts_records_keep_cached_policy(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE)
    await resolver.answer("postfix", "example.test")
    sts_world.dns.set_txt("_mta-sts.example.test", "v=STSv1; id=1", "v=STSv1; id=2")
    clock.advance(120)
    await resolver.answer("postfix", "example.test")
    await resolver.wait_idle()
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    assert counts(sts_world)[1] == 1


async def test_thirty_concurrent_first_lookups_one_fetch(
    resolver: PolicyResolver, sts_world: StsWorld
) -> None:
    sts_world.publish("example.test", ENFORCE, delay=0.2)
    replies = await asyncio.gather(*(resolver.answer("postfix", "example.test") for _ in range(30)))
    assert set(replies) == {ENFORCE_REPLY}
    assert counts(sts_world) == (1, 1)


async def test_cold_wait_then_background_completion(sts_world: StsWorld, clock: FakeClock) -> None:
    resolver = make_resolver(sts_world, clock, cold_wait=0.1)
    sts_world.publish("example.test", ENFORCE, delay=0.5)
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    await resolver.wait_idle()
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    assert resolver.stats.notfound_cold == 1


async def test_max_age_zero_applies_once(resolver: PolicyResolver, sts_world: StsWorld) -> None:
    sts_world.publish("example.test", ENFORCE.replace("86400", "0"))
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    await resolver.answer("postfix", "example.test")
    assert counts(sts_world)[1] == 2  # not reused: fetched again


async def test_restart_restores_cache_without_network(
    sts_world: StsWorld, clock: FakeClock, tmp_path: Path
) -> None:
    store = tmp_path / "policies.sqlite"
    first = make_resolver(sts_world, clock, store=store)
    sts_world.publish("example.test", ENFORCE)
    await first.answer("postfix", "example.test")
    first.cache.close()
    second = make_resolver(sts_world, clock, store=store)
    assert second.cache.load(clock()) == 1
    for entry in second.cache.hot_entries():
        second.render(entry)
    assert await second.answer("postfix", "example.test") == ENFORCE_REPLY
    assert counts(sts_world) == (1, 1)
    second.cache.close()


async def test_disk_tier_answers_evicted_domains_without_network(
    sts_world: StsWorld, clock: FakeClock, tmp_path: Path
) -> None:
    resolver = await a_test_evicted_to_disk(sts_world, clock, tmp_path)
    assert resolver.cache.get("a.test") is None  # evicted from memory
    assert await resolver.answer("postfix", "a.test") == ENFORCE_REPLY
    assert counts(sts_world, "a.test") == (1, 1)
    resolver.cache.close()


async def test_policy_in_use_but_pushed_out_of_memory_is_refreshed_too(
    sts_world: StsWorld, clock: FakeClock, tmp_path: Path
) -> None:
    """A domain in use can be only in the store (the memory set holds the most recent few);
    the daily refresh covers it as well, and one no longer in use is left alone."""
    resolver = await a_test_evicted_to_disk(sts_world, clock, tmp_path)  # a: disk, b: memory
    clock.advance(3600)
    assert await resolver.answer("postfix", "b.test") == ENFORCE_REPLY  # b is in use
    assert await resolver.answer("postfix", "a.test") == ENFORCE_REPLY  # a back, b pushed out
    await resolver.wait_idle()  # their TXT re-checks
    resolver.cache.write_batch(*resolver.cache.take_batch())
    stored = resolver.cache.load_from_store("b.test")
    assert stored is not None and stored.last_used == clock()  # the store knows b is in use
    clock.advance(86400 + 3600)  # refresh interval plus the largest jitter
    assert await resolver.refresh_once() == 2
    assert counts(sts_world, "a.test")[1] == counts(sts_world, "b.test")[1] == 2
    resolver.cache.write_batch(*resolver.cache.take_batch())
    stored = resolver.cache.load_from_store("b.test")
    assert stored is not None and stored.fetched_at == clock()
    clock.advance(3 * 86400)  # nobody asked for either since: no longer in use
    assert await resolver.refresh_once() == 0
    resolver.cache.close()


def test_store_learns_last_use_without_a_rewrite_and_lists_policies_in_use(
    tmp_path: Path,
) -> None:
    store = PolicyStore(tmp_path / "p.sqlite")
    policy = parse_policy(ENFORCE.encode())
    used = CacheEntry("a.test", "1", policy, fetched_at=T0, expires_at=T0 + 86400, last_used=T0)
    idle = CacheEntry("b.test", "1", policy, fetched_at=T0, expires_at=T0 + 86400, last_used=T0)
    store.write([used, idle], [])
    store.write([], [], {"a.test": T0 + 10, "gone.test": T0 + 10})  # unknown keys: no row made
    store.write([], [], {"a.test": T0 + 5})  # an older time never moves it back
    entry = store.get("a.test")
    assert entry is not None and entry.last_used == T0 + 10 and entry.policy == policy
    assert store.get("gone.test") is None
    candidates = store.refresh_candidates(T0 + 1, now=T0 + 86400, interval=86400)
    assert list(candidates) == [RefreshFacts("a.test", T0 + 10, T0, 0.0, 86400)]
    assert list(store.refresh_candidates(T0 + 1, now=T0 + 3600, interval=86400)) == []  # fresh
    short = parse_policy(ENFORCE.replace("86400", "3600").encode())  # due at 3/4 of max_age
    brief = CacheEntry("c.test", "1", short, fetched_at=T0, expires_at=T0 + 3600, last_used=T0 + 9)
    store.write([brief], [])
    assert [f.domain for f in store.refresh_candidates(T0 + 1, T0 + 2000, 86400)] == []
    assert [f.domain for f in store.refresh_candidates(T0 + 1, T0 + 2700, 86400)] == ["c.test"]
    store.close()


def test_corrupt_store_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policies.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    store = PolicyStore(path)
    assert len(store) == 0
    assert (tmp_path / "policies.sqlite.corrupt").read_bytes() == b"this is not sqlite" * 100
    assert "store-corrupt" in caplog.text
    store.close()


async def test_proactive_refresh_resets_lifetime(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE.replace("86400", "2592000"))
    await resolver.answer("postfix", "example.test")
    clock.advance(3600)
    assert await resolver.refresh_once() == 0  # not due yet
    clock.advance(86400 + 3600)
    assert await resolver.refresh_once() == 1
    entry = resolver.cache.get("example.test")
    assert entry is not None and entry.fetched_at == clock()
    assert counts(sts_world)[1] == 2


async def test_refresh_failure_warns_except_mode_none(
    resolver: PolicyResolver,
    sts_world: StsWorld,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sts_world.publish("e.test", ENFORCE.replace("86400", "2592000"))
    sts_world.publish("n.test", NONE.replace("86400", "2592000"))
    await resolver.answer("postfix", "e.test")
    await resolver.answer("postfix", "n.test")
    sts_world.https.set_policy("e.test", b"", status=500)
    sts_world.https.set_policy("n.test", b"", status=500)
    clock.advance(86400 + 3601)
    caplog.set_level(logging.INFO)
    assert await resolver.refresh_once() == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("domain=e.test" in w for w in warnings)
    assert not any("domain=n.test" in w for w in warnings)
    assert resolver.stats.refresh_failures == 2
    assert await resolver.answer("postfix", "e.test") == ENFORCE_REPLY  # still unexpired


async def test_refresh_concurrency_is_bounded(sts_world: StsWorld, clock: FakeClock) -> None:
    resolver = make_resolver(sts_world, clock, refresh_concurrency=3)
    domains = [f"d{i}.test" for i in range(8)]
    for d in domains:
        sts_world.publish(d, ENFORCE)
        await resolver.answer("postfix", d)
    for d in domains:
        sts_world.https.set_policy(d, ENFORCE, delay=0.05)
    clock.advance(86400 + 3601)
    assert await resolver.refresh_once() == 8
    assert resolver.stats.refresh_peak == 3


async def test_exact_wildcards_use_mx_names(sts_world: StsWorld, clock: FakeClock) -> None:
    resolver = make_resolver(sts_world, clock, exact_wildcards=True)
    policy = "version: STSv1\nmode: enforce\nmx: *.mx.example.test\nmax_age: 86400\n"
    sts_world.publish("example.test", policy)
    sts_world.dns.set_mx("example.test", (10, "a.mx.example.test."), (20, "b.c.mx.example.test."))
    reply = await resolver.answer("postfix", "example.test")
    assert reply == b"OK secure match=a.mx.example.test servername=hostname"


async def test_broken_policy_host_does_not_make_every_lookup_wait_on_dns(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE, status=500)
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    clock.advance(30)
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    assert counts(sts_world) == (1, 1)  # no second TXT query within txt_recheck
    clock.advance(31)
    assert await resolver.answer("postfix", "example.test") == NOTFOUND
    # re-checked; the fetch is still in its RFC 8461 §3.3 back-off
    assert counts(sts_world) == (2, 1)


async def test_short_max_age_is_refreshed_before_it_expires(
    resolver: PolicyResolver, sts_world: StsWorld, clock: FakeClock
) -> None:
    sts_world.publish("example.test", ENFORCE.replace("86400", "600"))
    await resolver.answer("postfix", "example.test")
    clock.advance(400)
    assert await resolver.refresh_once() == 0
    clock.advance(60)  # 460 s >= 0.75 * 600
    assert await resolver.refresh_once() == 1
    clock.advance(300)  # 760 s after the first fetch, 300 s after the refresh
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY


@pytest.mark.parametrize(
    ("dane_reply", "authenticated", "expected"),
    [
        (NOTFOUND, True, NOTFOUND),  # RFC 8461 §2: Postfix's global dane level applies
        (b"OK dane", True, b"OK dane"),
        (NOTFOUND, False, ENFORCE_REPLY),  # TLSA not DNSSEC-validated: not DANE-protected
        (None, True, ENFORCE_REPLY),  # DANE checks off (Postfix does no DANE)
    ],
)
async def test_dane_destination_never_gets_secure(
    sts_world: StsWorld,
    clock: FakeClock,
    dane_reply: bytes | None,
    authenticated: bool,
    expected: bytes,
) -> None:
    resolver = make_resolver(sts_world, clock, dane_reply=dane_reply)
    sts_world.publish("example.test", ENFORCE)
    sts_world.dns.set_mx("example.test", (10, "mail.example.test."))
    sts_world.dns.set("_25._tcp.mail.example.test", tlsa(3, 1, 1, "ab" * 32))
    if authenticated:
        sts_world.dns.authenticated.add("_25._tcp.mail.example.test")
    assert await resolver.answer("postfix", "example.test") == expected


def test_stored_filter_has_no_false_negatives() -> None:
    stored = StoredFilter()
    names = [f"d{i}.example" for i in range(20_000)]
    for name in names:
        stored.add(name)
    assert all(name in stored for name in names)
    false_positives = sum(f"x{i}.example" in stored for i in range(20_000))
    assert false_positives < 100  # ~0.3 % expected at 100k; far fewer at 20k


async def test_cold_lookup_of_a_never_stored_domain_skips_the_disk(
    sts_world: StsWorld, clock: FakeClock, tmp_path: Path
) -> None:
    resolver = make_resolver(sts_world, clock, store=tmp_path / "p.sqlite", memory_entries=1)
    reads: list[str] = []
    original = resolver.cache.load_from_store

    def counting(domain: str) -> CacheEntry | None:
        reads.append(domain)
        return original(domain)

    resolver.cache.load_from_store = counting  # type: ignore[method-assign]
    for domain in ("a.test", "b.test"):
        sts_world.publish(domain, ENFORCE)
        await resolver.answer("postfix", domain)
    assert reads == []  # neither was ever stored: no disk read, no thread hop
    resolver.cache.write_batch(*resolver.cache.take_batch())
    assert await resolver.answer("postfix", "a.test") == ENFORCE_REPLY  # evicted from memory
    assert reads == ["a.test"]
    resolver.cache.close()


async def test_background_rechecks_share_the_refresh_bound(
    sts_world: StsWorld, clock: FakeClock
) -> None:
    resolver = make_resolver(sts_world, clock, refresh_concurrency=2)
    domains = [f"d{i}.test" for i in range(6)]
    for d in domains:
        sts_world.publish(d, ENFORCE)
        await resolver.answer("postfix", d)
    for d in domains:  # every id changes; the new policies are slow to fetch
        sts_world.publish(d, ENFORCE, txt="v=STSv1; id=2", delay=0.1)
    clock.advance(61)
    for d in domains:
        assert await resolver.answer("postfix", d) == ENFORCE_REPLY  # never waits
    peak = 0
    while any(resolver.updates.in_flight(d) for d in domains):
        peak = max(peak, 2 - resolver.updates.refresh_slots._value)
        await asyncio.sleep(0.01)
    assert peak == 2
    assert all(resolver.cache.get(d).policy_id == "2" for d in domains)  # type: ignore[union-attr]


async def test_restart_burst_queues_at_most_background_limit_rechecks(
    sts_world: StsWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mta_sts_policyd.policy.update as update_module

    monkeypatch.setattr(update_module, "BACKGROUND_LIMIT", 3)
    resolver = make_resolver(sts_world, clock, refresh_concurrency=1)
    domains = [f"d{i}.test" for i in range(10)]
    for d in domains:
        sts_world.publish(d, ENFORCE)
        await resolver.answer("postfix", d)
        sts_world.dns.delay(f"_mta-sts.{d}", 0.2)
    clock.advance(61)  # every domain's TXT re-check is due at once
    for d in domains:
        assert await resolver.answer("postfix", d) == ENFORCE_REPLY
    assert sum(resolver.updates.in_flight(d) for d in domains) == 3  # no task per domain beyond
    await resolver.wait_idle()


async def test_promotion_from_the_store_writes_nothing_back(
    sts_world: StsWorld, clock: FakeClock, tmp_path: Path
) -> None:
    resolver = await a_test_evicted_to_disk(sts_world, clock, tmp_path)
    assert await resolver.answer("postfix", "a.test") == ENFORCE_REPLY  # read from disk
    entries, deletions, touched = resolver.cache.take_batch()
    assert (entries, deletions) == ([], [])
    assert touched == {"b.test": T0}  # pushed out: only its last use is written back
    resolver.cache.close()
