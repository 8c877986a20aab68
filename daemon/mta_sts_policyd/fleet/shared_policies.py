"""The Redis tier of the policy cache (fleet mode, docs/fleet.md "Shared policy cache").

Per domain: the shared entry (JSON, fleet/policy_codec.py; it expires `entry_grace` after its
policy does), the fleet's failure back-off and negative cache (each expiring with its own time),
the fetch lock (SET NX PX), and a version in one hash, bumped on every write and published on
the invalidation channel as "DOMAIN VERSION". A write never replaces a newer entry (a Lua
script compares fetch times in Redis itself, so two nodes racing cannot undo each other), and
it removes an older failure record in the same step (a good fetch ends the back-off).

Every call goes through the guarded client; reads raise FleetUnavailable, writes never raise:
a policy write that cannot reach Redis is queued (bounded, the newest per domain) and
reconciled when Redis returns, still newest-fetch-wins. Every value read is validated; a
malformed one is logged once and treated as missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.fleet import policy_codec as codec
from mta_sts_policyd.fleet.connection import FleetClient, Redis
from mta_sts_policyd.policy.entry import CacheEntry
from mta_sts_policyd.policy.shared_model import SharedFailure, SharedView

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_NEWEST = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[7] then
  local ok, doc = pcall(cjson.decode, current)
  if ok and type(doc) == 'table' and type(doc.fetched_at) == 'number'
     and doc.fetched_at >= tonumber(ARGV[2]) and doc.fetched_at <= tonumber(ARGV[6]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('DEL', KEYS[3])
local failed = redis.call('GET', KEYS[4])
if failed then
  local ok, doc = pcall(cjson.decode, failed)
  if not (ok and type(doc) == 'table' and type(doc.at) == 'number'
          and doc.at > tonumber(ARGV[2])) then
    redis.call('DEL', KEYS[4])
  end
end
local version = redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
redis.call('PUBLISH', ARGV[5], ARGV[4] .. ' ' .. version)
return version
"""
"""KEYS: entry, versions, negative, failure. ARGV: value, fetched_at, expiry (ms), domain,
channel, the latest believable fetch time, the value this node refused when it last read it.
Neither an entry claiming a fetch further in the future (forged, or a node's clock far ahead)
nor one this node found malformed blocks a newer write. The write ends, in the same step, the
fleet's failure back-off of any failure older than this fetch (a good fetch supersedes it:
otherwise the other nodes would keep honouring it for `failure_backoff`); a failure newer
than the fetch stays."""

RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

WAIT_POLL = 0.2
"""Seconds between re-reads while a cold node waits for another node's fetch (pub/sub wakes
it sooner)."""
QUEUE_LIMIT = 10_000
SEEN_LIMIT = 200_000
SCAN_BATCH = 500


@dataclass(frozen=True, slots=True)
class PendingWrite:
    domain: str
    value: bytes
    fetched_at: float
    expires_at: float
    """When the shared entry should disappear (policy expiry + entry_grace)."""


class SharedPolicyCache:
    """Implements policy.types.SharedPolicies on Redis."""

    def __init__(
        self,
        client: FleetClient,
        *,
        node: str,
        fetch_lock: float,
        entry_grace: float,
        negative_limit: float,
        clock: Callable[[], float] = time.time,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self.client = client
        self.keys = client.keys
        self.node = node
        self.fetch_lock = fetch_lock
        self.entry_grace = entry_grace
        self.negative_limit = negative_limit
        self.clock = clock
        self.queue: OrderedDict[str, PendingWrite] = OrderedDict()
        self.queue_limit = queue_limit
        self.seen: dict[str, int] = {}
        """Domain -> the shared version this node last read or wrote (revalidation)."""
        self._waiters: dict[str, list[asyncio.Event]] = {}
        self._write_newest = client.redis.register_script(WRITE_NEWEST)
        self._release_lock = client.redis.register_script(RELEASE_LOCK)
        """EVALSHA, loaded again by redis-py when a server lost it (restart, failover)."""
        self._refused: dict[str, bytes] = {}
        """Key -> the malformed value last logged (logged once, not on every read)."""

    async def _run(self, op: Callable[[Redis], Any], what: str) -> Any:
        return await self.client.run(op, what)

    # --- reads ------------------------------------------------------------------------------

    async def view(self, domain: str) -> SharedView:
        k = self.keys

        async def read(r: Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.get(k.policy(domain))
            pipe.get(k.failure(domain))
            pipe.get(k.negative(domain))
            pipe.hget(k.versions, domain)
            return list(await pipe.execute())

        raw_policy, raw_failure, raw_negative, raw_version = await self._run(read, "read shared")
        now = self.clock()
        version = _as_int(raw_version)
        self._saw(domain, version)
        return SharedView(
            policy=self._checked(
                k.policy(domain), raw_policy, lambda v: codec.decode_policy(v, domain, now, version)
            ),
            failure=self._checked(
                k.failure(domain), raw_failure, lambda v: codec.decode_failure(v, now)
            ),
            negative_until=self._checked(
                k.negative(domain),
                raw_negative,
                lambda v: codec.decode_negative(v, now, self.negative_limit),
            )
            or 0.0,
        )

    def _checked(
        self, key: str, raw: bytes | None, decode: Callable[[bytes | None], T]
    ) -> T | None:
        try:
            return decode(raw)
        except codec.SharedValueError as exc:
            if self._refused.get(key) != raw and raw is not None:
                if len(self._refused) > 1000:
                    self._refused.clear()
                self._refused[key] = raw
                log.warning("event=fleet-value-refused key=%s reason=%r", key, str(exc))
            return None

    def _saw(self, domain: str, version: int) -> None:
        if len(self.seen) >= SEEN_LIMIT and domain not in self.seen:
            self.seen.clear()  # a full re-read at the next revalidation, then bounded again
        self.seen[domain] = version

    async def changed(self, domains: Sequence[str]) -> list[str]:
        changed: list[str] = []
        for start in range(0, len(domains), SCAN_BATCH):
            chunk = list(domains[start : start + SCAN_BATCH])

            async def read(r: Redis, chunk: list[str] = chunk) -> list[Any]:
                return list(await r.hmget(self.keys.versions, chunk))

            versions = await self._run(read, "read shared versions")
            changed += [
                d for d, v in zip(chunk, versions, strict=True) if _as_int(v) != self.seen.get(d, 0)
            ]
        return changed

    # --- the fetch lock and waiting ----------------------------------------------------------

    async def lock(self, domain: str) -> str | None:
        token = f"{self.node} {secrets.token_hex(8)}"
        key, ms = self.keys.fetch_lock(domain), max(1, int(self.fetch_lock * 1000))
        taken = await self._run(lambda r: r.set(key, token, nx=True, px=ms), "take fetch lock")
        return token if taken else None

    async def unlock(self, domain: str, token: str) -> None:
        key = self.keys.fetch_lock(domain)
        with contextlib.suppress(FleetUnavailable):  # else it expires after fetch_lock seconds
            await self._run(lambda r: self._release_lock([key], [token], r), "release fetch lock")

    async def wait(
        self, domain: str, ready: Callable[[SharedView], bool], within: float
    ) -> SharedView | None:
        deadline = time.monotonic() + min(within, self.fetch_lock)
        event = asyncio.Event()
        self._waiters.setdefault(domain, []).append(event)
        try:
            while True:
                event.clear()  # before the read: a message that comes during it is not lost
                try:
                    view = await self.view(domain)
                except FleetUnavailable:
                    return None
                left = deadline - time.monotonic()
                if ready(view) or left <= 0:
                    return view if ready(view) else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, WAIT_POLL))
        finally:
            waiting = self._waiters.get(domain, [])
            waiting.remove(event)
            if not waiting:
                self._waiters.pop(domain, None)

    def wake(self, domain: str) -> None:
        """A message about `domain` came in: waiters re-read at once."""
        for event in self._waiters.get(domain, ()):
            event.set()

    # --- writes ------------------------------------------------------------------------------

    async def put_policy(self, entry: CacheEntry) -> None:
        policy = entry.policy
        if policy is None or entry.policy_id is None:
            return
        write = PendingWrite(
            entry.domain,
            codec.encode_policy(entry, self.node),
            entry.fetched_at,
            entry.fetched_at + policy.max_age + self.entry_grace,
        )
        try:
            await self._write(write)
        except FleetUnavailable:
            self._enqueue(write)

    async def _write(self, write: PendingWrite) -> None:
        k, now = self.keys, self.clock()
        ms = int((write.expires_at - now) * 1000)
        if ms <= 0:
            return  # its policy and the grace are over: nothing worth sharing any more
        keys = (
            k.policy(write.domain), k.versions, k.negative(write.domain), k.failure(write.domain)
        )  # fmt: skip
        refused = self._refused.get(keys[0], b"")
        args = (write.value, repr(write.fetched_at), ms, write.domain, k.invalidations,
                repr(now + codec.MAX_SKEW), refused)  # fmt: skip
        version = await self._run(
            lambda r: self._write_newest(keys, args, r), "write shared policy"
        )
        if int(version):
            self._saw(write.domain, int(version))

    def _enqueue(self, write: PendingWrite) -> None:
        """Keep the newest write per domain until Redis is back; bounded (oldest dropped)."""
        queued = self.queue.get(write.domain)
        if queued is not None and queued.fetched_at >= write.fetched_at:
            return
        if not self.queue:
            log.info("event=fleet-writes-queued reason='Redis unavailable'")
        self.queue[write.domain] = write
        self.queue.move_to_end(write.domain)
        while len(self.queue) > self.queue_limit:
            dropped, _ = self.queue.popitem(last=False)
            log.info("event=fleet-write-dropped domain=%s reason='queue full'", dropped)

    async def reconcile(self) -> int:
        """Write the queued policies (each only where no newer one is shared); stops at the
        first failure and keeps the rest. Returns how many were written."""
        done = 0
        while self.queue:
            domain, write = next(iter(self.queue.items()))
            try:
                await self._write(write)
            except FleetUnavailable:
                return done
            if self.queue.get(domain) is write:
                del self.queue[domain]
            done += 1
        if done:
            log.info("event=fleet-writes-reconciled count=%d", done)
        return done

    async def put_failure(self, domain: str, failure: SharedFailure, ttl: float) -> None:
        k, value = self.keys, codec.encode_failure(failure)
        ms = max(1, int(ttl * 1000))

        async def write(r: Redis) -> None:
            pipe = r.pipeline(transaction=False)
            pipe.set(k.failure(domain), value, px=ms)
            pipe.publish(k.invalidations, f"{domain} failure")
            await pipe.execute()

        with contextlib.suppress(FleetUnavailable):  # worth little later: not queued
            await self._run(write, "write shared failure")

    async def put_negative(self, domain: str, until: float) -> None:
        now = self.clock()
        ms = int((until - now) * 1000)
        if ms <= 0:
            return
        key, value = self.keys.negative(domain), codec.encode_negative(now, until)
        with contextlib.suppress(FleetUnavailable):
            await self._run(lambda r: r.set(key, value, px=ms), "write shared negative")

    # --- purge ----------------------------------------------------------------------------------

    async def purge(self, domain: str | None) -> int | None:
        """`cache purge`: the shared entries, versions and refresh-queue places of one domain
        (or of all) go, and the other nodes are told; a domain comes back into the queue only
        when a node answers it again. None: Redis unavailable (only this node purged)."""
        k = self.keys
        message = f"{domain or '*'} purge {self.node}"
        try:
            if domain is None:
                return await self._purge_all(message)

            async def one(r: Redis) -> int:
                pipe = r.pipeline(transaction=False)
                pipe.delete(k.policy(domain), k.failure(domain), k.negative(domain))
                pipe.hdel(k.versions, domain)
                pipe.zrem(k.refresh_due, domain)  # no refetch of a purged domain when due
                pipe.zrem(k.refresh_used, domain)
                pipe.publish(k.invalidations, message)
                return int((await pipe.execute())[0])

            self.queue.pop(domain, None)
            deleted: int = await self._run(one, "purge shared policy")
            return min(1, deleted)
        except FleetUnavailable:
            return None

    async def _purge_all(self, message: str) -> int:
        k, deleted = self.keys, 0
        for pattern in (k.policy("*"), k.failure("*"), k.negative("*")):
            cursor: int = 0
            while True:
                cursor, names = await self._scan(cursor, pattern)
                if names:
                    count = await self._unlink(names)
                    deleted += count if pattern == k.policy("*") else 0
                if not cursor:
                    break
        await self._run(
            lambda r: r.unlink(k.versions, k.refresh_due, k.refresh_used),
            "purge shared versions and refresh queue",
        )
        await self._run(lambda r: r.publish(k.invalidations, message), "publish purge")
        self.queue.clear()
        self.seen.clear()
        return deleted

    async def _unlink(self, names: list[bytes]) -> int:
        async def unlink(r: Redis) -> int:
            return int(await r.unlink(*names))

        count: int = await self._run(unlink, "purge shared")
        return count

    async def _scan(self, cursor: int, pattern: str) -> tuple[int, list[bytes]]:
        async def scan(r: Redis) -> tuple[int, list[bytes]]:
            found, names = await r.scan(cursor, match=pattern, count=SCAN_BATCH)
            return int(found), list(names)

        result: tuple[int, list[bytes]] = await self._run(scan, "scan shared policies")
        return result


def _as_int(raw: Any) -> int:
    try:
        return int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        return 0
