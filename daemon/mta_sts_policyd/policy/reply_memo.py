"""Request bytes -> framed reply, for repeat questions about an enforce domain in the hot set.

Why: for a cached answer, the Python path (netstring decoding, key parsing, the resolver's
state machine, one coroutine) cost as much CPU as the `recv` and `send` around it. Postfix asks
byte-identical questions again and again, so the framed reply for those exact bytes can be
written straight from `data_received`.

A memo entry is used only while it gives exactly what the full path would: the domain's hot-set
entry still holds the same policy and reply objects, no discovery failure is in force
(those are counted per lookup for TLS-RPT), and neither expiry nor the TXT re-check is due.
Otherwise the entry is dropped and the full path answers (and learns again). A hit keeps the
side effects of a cached answer: LRU position, `last_used`, the hit and enforce counters. In
the latency histogram a memo answer counts in the lowest bucket: it takes well under 1 µs and
is not timed (timing it cost a quarter of the memo's own time).

Only `enforce` answers are learnt: `testing` domains feed the shadow prober on every answer,
and NOTFOUND answers are cheap on the full path and change more often.
"""

from __future__ import annotations

from collections.abc import Callable

from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache
from mta_sts_policyd.policy.stats import LookupStats
from mta_sts_policyd.postfix.socketmap import MAX_REPLY, encode_netstring, parse_request
from mta_sts_policyd.sts.model import Mode, Policy

MIN_MEMO_LIMIT = 1_000
"""Request byte strings remembered: the memory set's size, at least this many. A request for a
domain outside the memory set never matches, so more would only keep stale replies alive."""

_Memo = tuple[str, Policy, bytes, bytes, float]
"""(domain, the entry's policy and reply when learnt, framed reply, when its TXT re-check is due).
The entry itself is not held: one pushed out of the memory set must be freed, not pinned here."""


class ReplyMemo:
    """Owned by the resolver (it learns); read by each connection (`reply`)."""

    __slots__ = ("_clock", "_hot", "_limit", "_memo", "_stats", "txt_recheck")

    def __init__(
        self,
        cache: PolicyCache,
        stats: LookupStats,
        clock: Callable[[], float],
        txt_recheck: float,
    ) -> None:
        self._hot = cache.hot_set
        self._limit = max(MIN_MEMO_LIMIT, cache.memory_entries)
        self._stats = stats
        self._clock = clock
        self._memo: dict[bytes, _Memo] = {}
        self.txt_recheck = txt_recheck

    def __len__(self) -> int:
        return len(self._memo)

    def reply(self, request: bytes) -> bytes | None:
        """The framed reply for a raw request (one whole netstring), or None: use the full path."""
        hit = self._memo.get(request)
        if hit is None:
            return None
        domain, policy, reply, framed, recheck_at = hit
        now = self._clock()
        hot = self._hot
        entry = hot.get(domain)
        if (
            entry is None
            or entry.reply is not reply  # re-rendered, refetched or replaced since
            or entry.policy is not policy
            or now >= recheck_at
            or now >= entry.expires_at  # read live: a refetch may shorten it in place
            or entry.failure is not None
        ):
            del self._memo[request]
            return None
        hot.move_to_end(domain)  # the LRU touch PolicyCache.get would do
        entry.last_used = now
        self._stats.memo_hits += 1  # also a cache hit and an enforce answer (lookup_stats)
        return framed

    def learn(self, name: str, key: str, entry: CacheEntry) -> None:
        """Remember the answer just given from `entry` for the request `name SP key`."""
        policy = entry.policy
        if policy is None or policy.mode is not Mode.ENFORCE or entry.failure is not None:
            return
        if len(entry.reply) > MAX_REPLY:
            # the connection replaces it with NOTFOUND (PF-socketmap-size); that path must see it
            return
        payload = f"{name} {key}".encode()
        if parse_request(payload) != (name, key):
            return  # not what the client sent (it had invalid UTF-8): never matches anyway
        recheck_at = entry.txt_checked_at + self.txt_recheck
        if self._clock() >= min(recheck_at, entry.expires_at):
            return
        if len(self._memo) >= self._limit:
            self._memo.clear()
        framed = encode_netstring(entry.reply)
        self._memo[encode_netstring(payload)] = (
            entry.domain,
            policy,
            entry.reply,
            framed,
            recheck_at,
        )

    def clear(self) -> None:
        """Settings changed (reload): learn everything again."""
        self._memo.clear()
