"""The fleet's report bookkeeping in Redis: a day's frozen inputs, one lease per report, fencing
tokens, and state writes that a stale lease holder cannot make.

Why fencing and not only the lease: a holder can pause (GC, a slow relay, a frozen VM) past its
lease; another node then takes the report over. Every write carries the writer's token (INCR),
and the write is refused when the stored state has a newer token or is already final, so the
paused node can never overwrite what its successor recorded. Every write is one Lua script, so
compare-and-set is atomic on the server.

Values read back are validated (ReportState.parse): Redis is a trust boundary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from mta_sts_policyd.fleet.connection import FleetClient
from mta_sts_policyd.fleet.keys import FleetKeys

FINAL = ("sent", "failed", "no-destination")
STATES = ("sending", "retry", *FINAL)

_FENCED_WRITE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' then
    local s = old['state']
    if (tonumber(old['token']) or 0) > tonumber(ARGV[2])
       or s == 'sent' or s == 'failed' or s == 'no-destination' then
      return {0, cur}
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, cur or ''}
"""

_FREEZE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local all = redis.call('HGETALL', KEYS[1])
if #all == 0 then return 0 end
for i = 1, #all, 2 do redis.call('HSET', KEYS[2], all[i], all[i + 1]) end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class ReportState:
    """One (day, domain, record) report as the fleet knows it."""

    state: str
    """sending (handed to a destination, not yet recorded), retry, sent, failed, no-destination"""
    token: int
    node: str
    report_id: str
    digest: str
    """sha256 of the report's JSON: a re-send after a takeover is checked against it."""
    attempts: int = 0
    first_attempt: float = 0.0
    due: float = 0.0
    destination: str = ""
    """The destination being sent to (sending) or that accepted the report (sent)."""
    stamp_date: float = 0.0
    """The mail's Date (sending): a takeover re-sends the same bytes."""
    dkim: str = ""
    """The DKIM-Signature header made for the mail (as latin-1 text), '' when unsigned."""
    failed: tuple[str, ...] = ()
    """Destinations that refused the report for good."""
    error: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, raw: bytes | str) -> ReportState | None:
        """None for anything that is not a well-formed state (it is then treated as absent,
        and the fenced write replaces it)."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(body, dict) or body.get("state") not in STATES:
            return None
        ints, floats = ("token", "attempts"), ("first_attempt", "due", "stamp_date")
        texts = ("node", "report_id", "digest", "destination", "dkim", "error")
        if any(type(body.get(k)) is not int for k in ints):
            return None
        if any(type(body.get(k)) not in (int, float) for k in floats):
            return None
        if any(not isinstance(body.get(k), str) for k in texts):
            return None
        failed = body.get("failed")
        if not isinstance(failed, list) or not all(isinstance(f, str) for f in failed):
            return None
        values: dict[str, Any] = {k: body[k] for k in (*ints, *texts, "state")}
        values.update({k: float(body[k]) for k in floats}, failed=tuple(failed))
        return cls(**values)


class ReportLedger:
    """The Redis calls of the fleet's report sender, each through the guarded client."""

    def __init__(
        self, client: FleetClient, keys: FleetKeys, *, lease_seconds: float, keep_seconds: float
    ) -> None:
        self.client = client
        self.keys = keys
        self.lease_ms = max(int(lease_seconds * 1000), 1)
        self.keep_ms = max(int(keep_seconds * 1000), 1)

    async def snapshot_status(self, day: date) -> dict[str, bool]:
        """Node -> has it uploaded its final snapshot of the day (anything but "final" is
        not: the fleet waits for that node until the deadline)."""
        key = self.keys.snapshot_status(day.isoformat())
        raw = _fields(await self.client.run(lambda r: r.hgetall(key), "read snapshot status"))
        return {node: value == b"final" for node, value in raw.items()}

    async def inputs(self, day: date) -> dict[str, bytes]:
        """The day's frozen inputs ({} while not frozen)."""
        key = self.keys.report_inputs(day.isoformat())
        return _fields(await self.client.run(lambda r: r.hgetall(key), "read report inputs"))

    async def freeze(self, day: date) -> bool:
        """Copy the day's snapshots to its inputs, once for the fleet (the first node wins)."""
        keys = (self.keys.snapshot(day.isoformat()), self.keys.report_inputs(day.isoformat()))
        done = await self.client.run(
            lambda r: r.eval(_FREEZE, 2, *keys, self.keep_ms), "freeze report inputs"
        )
        return bool(done)

    async def states(self, day: date) -> dict[str, ReportState | None]:
        key = self.keys.report_state(day.isoformat())
        raw = _fields(await self.client.run(lambda r: r.hgetall(key), "read report states"))
        return {f: ReportState.parse(v) for f, v in raw.items()}

    async def state(self, day: date, field: str) -> ReportState | None:
        key = self.keys.report_state(day.isoformat())
        raw = await self.client.run(lambda r: r.hget(key, field), "read report state")
        return None if raw is None else ReportState.parse(raw)

    async def write(self, day: date, field: str, state: ReportState) -> bool:
        """The fenced write: False when a newer token wrote, or the report is already final."""
        key = self.keys.report_state(day.isoformat())
        args = (field, state.token, state.dumps(), self.keep_ms)
        result = await self.client.run(
            lambda r: r.eval(_FENCED_WRITE, 1, key, *args), "write report state"
        )
        return bool(result and int(result[0]) == 1)

    async def take_lease(self, day: date, lease_name: str) -> int | None:
        """A fresh fencing token and the report's lease, or None if another node holds it."""
        token = int(await self.client.run(lambda r: r.incr(self.keys.fencing), "fencing token"))
        key = self._lease_key(day, lease_name)
        got = await self.client.run(
            lambda r: r.set(key, str(token), nx=True, px=self.lease_ms), "take report lease"
        )
        return token if got else None

    async def renew(self, day: date, lease_name: str, token: int) -> bool:
        key = self._lease_key(day, lease_name)
        done = await self.client.run(
            lambda r: r.eval(_RENEW, 1, key, str(token), self.lease_ms), "renew report lease"
        )
        return bool(done)

    async def release(self, day: date, lease_name: str, token: int) -> None:
        key = self._lease_key(day, lease_name)
        await self.client.run(lambda r: r.eval(_RELEASE, 1, key, str(token)), "release lease")

    def _lease_key(self, day: date, lease_name: str) -> str:
        domain, _, digest = lease_name.partition(" ")
        return self.keys.report_lease(day.isoformat(), domain, digest)


def _fields(raw: Any) -> dict[str, bytes]:
    """HGETALL's reply with text field names (values stay bytes for the validating parser)."""
    out: dict[str, bytes] = {}
    for k, v in dict(raw or {}).items():
        name = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        out[name] = v if isinstance(v, bytes) else str(v).encode()
    return out
