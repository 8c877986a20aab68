"""The fleet's shared refresh due-queue: each domain refreshed once per interval by the whole
fleet, with no leader (docs/fleet.md "Refresh without a leader").

Two sorted sets: `refresh_due` (domain -> when its refresh is due) and `refresh_used` (domain
-> the last time any node answered it). Nodes report what they answered once a round, with
when each domain is due by their copy (ZADD GT: a due time only moves later, so a stale copy
never undoes a claim). A claim is one Lua script: up to `batch` members due now, each moved to
now + `lease` and returned, so two nodes never claim the same domain while the lease runs and
a crashed node's claims come back when it ends. The claimer sets the next due time after the
refetch. A domain no node has answered for `forget_after` leaves both sets when it comes due.
Implements policy/shared_refresh.py's SharedRefreshQueue.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mta_sts_policyd import metrics
from mta_sts_policyd.fleet.connection import FleetClient, Redis
from mta_sts_policyd.sts.keys import policy_domain_for_key

log = logging.getLogger(__name__)

REPORT_CHUNK = 1000
"""Domains in one report round trip (a large hot set is sent in several)."""
CLAIM_ROUNDS = 8
"""Range reads one claim makes at most: forgotten domains it drops on the way cannot keep the
script (which blocks Redis while it runs) going for long."""

CLAIM_SCRIPT = """
local due, used = KEYS[1], KEYS[2]
local now, lease_end = ARGV[1], ARGV[2]
local limit, cutoff = tonumber(ARGV[3]), tonumber(ARGV[4])
local claimed, forgotten, rounds = {}, 0, 0
while #claimed < limit and rounds < tonumber(ARGV[5]) do
  rounds = rounds + 1
  local batch = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit - #claimed)
  if #batch == 0 then break end
  for _, domain in ipairs(batch) do
    local last = redis.call('ZSCORE', used, domain)
    if (not last) or tonumber(last) < cutoff then
      redis.call('ZREM', due, domain)
      redis.call('ZREM', used, domain)
      forgotten = forgotten + 1
    else
      redis.call('ZADD', due, lease_end, domain)
      claimed[#claimed + 1] = domain
    end
  end
end
return {forgotten, claimed}
"""


class RefreshQueue:
    """One node's view of the shared due-queue; every call goes through the guarded client
    (errors.FleetUnavailable when Redis cannot be used)."""

    def __init__(
        self,
        client: FleetClient,
        *,
        lease: float,
        batch: int,
        forget_after: float,
        slack: float,
    ) -> None:
        self._client = client
        self._keys = client.keys
        self.lease = lease
        self.batch = batch
        self.forget_after = forget_after
        self._slack = slack
        self._claim = client.redis.register_script(CLAIM_SCRIPT)
        self.claimed = 0
        self.forgotten = 0

    @property
    def slack(self) -> float:
        return self._slack

    async def report(self, used: Mapping[str, float], due: Mapping[str, float]) -> None:
        names = list(used)
        for start in range(0, len(names), REPORT_CHUNK):
            chunk = names[start : start + REPORT_CHUNK]
            used_part = {d: used[d] for d in chunk}
            due_part = {d: due[d] for d in chunk if d in due}
            await self._client.run(self._reporter(used_part, due_part), "report refresh use")

    def _reporter(
        self, used: dict[str, float], due: dict[str, float]
    ) -> Callable[[Redis], Awaitable[Any]]:
        async def op(redis: Redis) -> Any:
            pipe = redis.pipeline(transaction=True)
            pipe.zadd(self._keys.refresh_used, used, gt=True)
            if due:
                pipe.zadd(self._keys.refresh_due, due, gt=True)
            return await pipe.execute()

        return op

    async def claim(self, now: float) -> list[str]:
        keys = [self._keys.refresh_due, self._keys.refresh_used]
        args = [repr(now), repr(now + self.lease), self.batch, repr(now - self.forget_after),
                CLAIM_ROUNDS]  # fmt: skip
        reply = await self._client.run(
            lambda r: self._claim(keys=keys, args=args, client=r), "claim refreshes"
        )
        forgotten, members = int(reply[0]), reply[1]
        if forgotten:
            self.forgotten += forgotten
            log.info("event=fleet-refresh-forgotten domains=%d reason='no node asked for them"
                     " within forget_after'", forgotten)  # fmt: skip
        claimed, bad = self._validated(members)
        if bad:
            await self._client.run(
                lambda r: r.zrem(self._keys.refresh_due, *bad), "drop bad queue members"
            )
        self.claimed += len(claimed)
        metrics.FLEET_REFRESH_CLAIMED.inc(len(claimed))
        return claimed

    @staticmethod
    def _validated(members: list[bytes]) -> tuple[list[str], list[bytes]]:
        """Redis is a trust boundary: only A-label policy domains, as this daemon writes them."""
        good: list[str] = []
        bad: list[bytes] = []
        for raw in members:
            name = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
            if policy_domain_for_key(name) == name:
                good.append(name)
            else:
                log.warning("event=fleet-refresh-bad-member member=%r reason='not a policy"
                            " domain: dropped from the queue'", name[:100])  # fmt: skip
                bad.append(raw)
        return good, bad

    async def done(self, due: Mapping[str, float]) -> None:
        """Next due times of refreshed domains; XX: a domain forgotten meanwhile stays out."""
        if due:
            mapping = dict(due)
            await self._client.run(
                lambda r: r.zadd(self._keys.refresh_due, mapping, xx=True), "schedule refreshes"
            )

    async def depth(self, now: float) -> tuple[int, int]:
        """(domains in the queue, of which due now) for `fleet status`."""

        async def read(redis: Redis) -> Any:
            pipe = redis.pipeline(transaction=False)
            pipe.zcard(self._keys.refresh_due)
            pipe.zcount(self._keys.refresh_due, "-inf", repr(now))
            return await pipe.execute()

        total, due = await self._client.run(read, "read refresh queue depth")
        return int(total), int(due)
