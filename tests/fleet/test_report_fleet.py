"""One TLS report per (domain, rua) and day for a whole fleet (issue 16 item 6), against a real
redis-server and the loopback receivers (SMTP, HTTPS): nodes with their own SQLite stores and
an injected clock crossing midnight; a node killed between sending and recording; Redis gone
at report time; a node late past midnight before and after the deadline."""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import trustme

from mta_sts_policyd import metrics
from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.nodes import Heartbeat, NodeFacts
from mta_sts_policyd.fleet.report_sender import decode_all, send_delay
from mta_sts_policyd.fleet.report_snapshot import merge, state_field
from mta_sts_policyd.tlsrpt.deliver import DeliverySettings, NetworkTransport, Stamp
from mta_sts_policyd.tlsrpt.message import DkimSettings
from mta_sts_policyd.tlsrpt.model import FailureDetail, SessionEvent
from mta_sts_policyd.tlsrpt.record import RuaDestination
from mta_sts_policyd.tlsrpt.report import ReportDocument
from support.fleet_reports import PREFIX, Clock, Node, delivery, make_node
from support.redis_server import RedisServer
from support.tlsrpt_receivers import HttpsReceiver, SmtpReceiver, make_dkim_key
from support.tlsrpt_validate import DAY_TS, STS, validate_report

DAY = date(2026, 11, 21)
MIDNIGHT = DAY_TS + 86400
SETTLE = 3600.0
EXPIRED = FailureDetail(ResultType.CERTIFICATE_EXPIRED, receiving_mx_hostname="mx.x.example")


@dataclass
class World:
    tmp: Path
    redis: RedisServer
    smtp: SmtpReceiver
    https: HttpsReceiver
    deliver: DeliverySettings
    clock: Clock
    nodes: list[Node]

    def records(self) -> dict[str, str]:
        return {
            "mail.example": "v=TLSRPTv1;rua=mailto:tlsrpt@mail.example",
            "web.example": f"v=TLSRPTv1;rua={self.https.url('/web')}",
            "both.example": f"v=TLSRPTv1;rua={self.https.url('/both')},mailto:r@both.example",
        }

    def add(self, name: str, **kw: Any) -> Node:
        node = make_node(self.tmp, name, self.redis.url, self.clock, self.deliver, **kw)
        self.nodes.append(node)
        return node

    def feed(self, node: Node, successes: int, failures: int, at: float = DAY_TS + 3600) -> None:
        for domain, record in self.records().items():
            for ok, n in ((True, successes), (False, failures)):
                if n:
                    fails = () if ok else (EXPIRED,)
                    node.store.submit(SessionEvent(at, domain, STS, ok, fails, record, count=n))

    async def tick(self, nodes: list[Node] | None = None) -> None:
        await asyncio.gather(*(n.reporting.tick() for n in (nodes or self.nodes)))

    def reports(self) -> dict[str, list[dict[str, Any]]]:
        """Destination -> JSON reports received there."""
        out: dict[str, list[dict[str, Any]]] = {}
        for post in self.https.posts:
            out.setdefault(post.path, []).append(json.loads(gzip.decompress(post.body)))
        for _, rcpts, raw in self.smtp.sink.messages:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            (part,) = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
            body = json.loads(gzip.decompress(part.get_payload(decode=True)))
            out.setdefault(rcpts[0], []).append(body)
        return out


@pytest.fixture
def ca_file(tmp_path: Path) -> Iterator[tuple[trustme.CA, str]]:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    yield ca, str(path)


@pytest.fixture
async def world(
    tmp_path: Path, redis_server: RedisServer, ca_file: tuple[trustme.CA, str]
) -> AsyncIterator[World]:
    ca, path = ca_file
    with SmtpReceiver() as smtp, HttpsReceiver(ca) as https:
        w = World(tmp_path, redis_server, smtp, https, delivery(smtp.port, path),
                  Clock(DAY_TS + 20 * 3600), [])  # fmt: skip
        yield w
        for node in w.nodes:
            await node.close()


def totals(report: dict[str, Any]) -> tuple[int, int, int]:
    (pol,) = report["policies"]
    s = pol["summary"]
    details = sum(d["failed-session-count"] for d in pol.get("failure-details", ()))
    return s["total-successful-session-count"], s["total-failure-session-count"], details


async def cross_midnight(world: World) -> None:
    await world.tick()  # 20:00: open day uploaded, nothing sent
    assert world.reports() == {}
    world.clock.now = MIDNIGHT + 10
    await world.tick()  # final snapshots; not before midnight + settle
    assert world.reports() == {}
    world.clock.now = MIDNIGHT + SETTLE + 1


@pytest.mark.parametrize("n", [2, 4, 8])
async def test_n_nodes_one_report_per_domain_and_rua_with_the_sums(world: World, n: int) -> None:
    sent = metrics.FLEET_REPORTS_SENT.read()
    for i in range(n):
        node = world.add(f"node{i}")
        world.feed(node, successes=10 + i, failures=i % 3)
        world.feed(node, successes=1, failures=0, at=MIDNIGHT + 60)  # the next day: not reported
    await cross_midnight(world)
    await world.tick()
    await world.tick()  # a second pass sends nothing more
    got = world.reports()
    assert sorted(got) == [
        "/both",
        "/web",
        "tlsrpt@mail.example",
    ]  # both.example: first rua took it
    ok = sum(10 + i for i in range(n))
    bad = sum(i % 3 for i in range(n))
    for reports in got.values():
        (report,) = reports
        validate_report(json.dumps(report).encode())
        assert totals(report) == (ok, bad, bad)
        assert report["date-range"]["start-datetime"] == "2026-11-21T00:00:00Z"
    assert metrics.FLEET_REPORTS_SENT.read() - sent == 3
    states = await world.nodes[0].sender.ledger.states(DAY)
    assert {s.state for s in states.values() if s} == {"sent"} and len(states) == 3
    assert all(DAY in node.sender.done for node in world.nodes)


class Killed(BaseException):
    """The process dies: nothing after it runs (not even a `finally` that writes to Redis)."""


class DiesAfterSending:
    """The real transport; the node dies right after the relay accepted the report."""

    def __init__(self, inner: NetworkTransport) -> None:
        self.inner = inner

    def stamp(self, doc: ReportDocument, dest: RuaDestination, date: float) -> Stamp:
        return self.inner.stamp(doc, dest, date)

    async def deliver(
        self, doc: ReportDocument, dest: RuaDestination, stamp: Stamp | None = None
    ) -> None:
        await self.inner.deliver(doc, dest, stamp)
        raise Killed


async def test_killed_between_sending_and_recording_resends_the_same_bytes_once(
    world: World,
) -> None:
    key = make_dkim_key()
    pem = world.tmp / "dkim.pem"
    pem.write_bytes(key.pem)
    dkim = DkimSettings("sender.example", "rpt", str(pem))
    doomed = world.add(
        "doomed", lease=3.0, dkim=dkim,
        transport=DiesAfterSending(NetworkTransport(world.deliver, dkim)),
    )  # fmt: skip
    heir = world.add("heir", lease=3.0, dkim=dkim)
    world.feed(doomed, 5, 1)
    world.feed(heir, 7, 0)
    await cross_midnight(world)  # both nodes' final counts are in
    duplicates = metrics.FLEET_POSSIBLE_DUPLICATES.read()
    for _ in world.records():  # one report per pass reaches the relay, then the node dies
        with pytest.raises(Killed):
            await doomed.reporting.tick()
    assert len(world.https.posts) + len(world.smtp.sink.messages) == 3
    await world.tick([heir])  # the leases have not expired: the heir leaves them alone
    assert len(world.https.posts) + len(world.smtp.sink.messages) == 3
    await asyncio.sleep(3.1)
    await world.tick([heir])
    assert metrics.FLEET_POSSIBLE_DUPLICATES.read() - duplicates == 3
    first, again = (m[2] for m in world.smtp.sink.messages)
    assert first == again and b"DKIM-Signature" in first  # the same bytes, signature and all
    by_path: dict[str, list[bytes]] = {}
    for post in world.https.posts:
        by_path.setdefault(post.path, []).append(post.body)
    assert all(len(b) == 2 and b[0] == b[1] for b in by_path.values())
    for reports in world.reports().values():  # nothing lost: every count is in
        assert all(totals(r) == (12, 1, 1) for r in reports)
    states = await heir.sender.ledger.states(DAY)
    assert {s.state for s in states.values() if s} == {"sent"}
    await world.tick([heir])
    assert len(world.https.posts) + len(world.smtp.sink.messages) == 6


async def test_no_fleet_reports_without_redis_then_catch_up(world: World) -> None:
    nodes = [world.add(f"node{i}") for i in range(3)]
    for i, node in enumerate(nodes):
        world.feed(node, 3 + i, 1)
    await cross_midnight(world)
    world.redis.kill()
    await world.tick()
    await world.tick()
    assert world.reports() == {}  # no Redis, no fleet report (a split would send twice)
    world.redis.start()  # an empty Redis: the snapshots are uploaded again
    await asyncio.sleep(0.4)  # the breakers' reset time
    await asyncio.gather(*(n.uploader.tick() for n in nodes))
    await world.tick()
    await world.tick()
    got = world.reports()
    assert len(got) == 3
    for reports in got.values():
        (report,) = reports
        assert totals(report) == (12, 3, 3)


async def test_a_node_late_past_midnight_is_in_before_the_deadline(world: World) -> None:
    up = [world.add("a"), world.add("b")]
    late = world.add("late")
    for node in world.nodes:
        world.feed(node, 4, 1)
    await world.tick()  # 20:00: every node uploads its open day
    world.clock.now = MIDNIGHT + SETTLE + 1
    await world.tick(up)  # "late" is down over midnight: the fleet waits for it
    assert world.reports() == {}
    world.clock.now = MIDNIGHT + 2 * 3600
    await world.tick([late])  # back before the deadline: its final counts go up
    await world.tick(up)
    for reports in world.reports().values():
        (report,) = reports
        assert totals(report) == (12, 3, 3)


async def test_a_node_back_after_the_deadline_is_left_out(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    up = [world.add("a"), world.add("b")]
    late = world.add("late")
    for node in world.nodes:
        world.feed(node, 4, 1)
    await world.tick()  # 20:00: the day so far, "late" included
    world.feed(late, 100, 0, at=DAY_TS + 23 * 3600)  # counted after its last upload
    world.clock.now = MIDNIGHT + SETTLE + 1
    await world.tick(up)
    assert world.reports() == {}  # waiting for "late"'s final counts
    world.clock.now = MIDNIGHT + 6 * 3600 + 1  # the deadline: sent with what "late" uploaded
    await world.tick(up)
    got = world.reports()
    assert len(got) == 3
    for reports in got.values():
        (report,) = reports
        assert totals(report) == (12, 3, 3)  # its 23:00 sessions are not in
    await world.tick([late])  # back after the deadline: nothing more is sent
    await world.tick(up)
    assert sum(map(len, world.reports().values())) == 3
    assert "event=fleet-snapshot-left-out day=2026-11-21 node=late" in caplog.text


async def test_a_node_cut_off_all_day_joins_before_the_inputs_are_frozen(world: World) -> None:
    """Not known to the fleet until it uploads: in if it does before the freeze."""
    up = [world.add("a"), world.add("b")]
    away = world.add("away")
    for node in world.nodes:
        world.feed(node, 4, 1)
    await world.tick(up)
    world.clock.now = MIDNIGHT + 10
    await world.tick(up)
    await world.tick([away])  # its first contact: final counts, and it may send itself
    world.clock.now = MIDNIGHT + SETTLE + 1
    await world.tick()
    for reports in world.reports().values():
        (report,) = reports
        assert totals(report) == (12, 3, 3)


async def test_a_node_up_but_cut_off_that_day_is_waited_for(world: World) -> None:
    """Its heartbeat says it is up and uploads snapshots: the fleet waits for its final counts
    of the day (before the deadline) rather than leave it out."""
    up = [world.add("a"), world.add("b")]
    quiet = world.add("quiet")
    for node in world.nodes:
        world.feed(node, 4, 1)
    world.clock.now = MIDNIGHT + 10
    await world.tick(up)
    world.clock.now = MIDNIGHT + SETTLE + 1
    facts = NodeFacts(snapshots=lambda: {"2026-11-20": DAY_TS - 3600})
    assert await Heartbeat(quiet.client, "quiet", "0", world.clock, facts).beat()
    await world.tick(up)
    assert world.reports() == {}  # waiting for "quiet"
    await world.tick([quiet])
    await world.tick(up)
    got = world.reports()
    assert len(got) == 3
    for reports in got.values():
        (report,) = reports
        assert totals(report) == (12, 3, 3)


async def test_reports_are_spread_over_send_delay_max_the_same_on_every_node(
    world: World,
) -> None:
    """As on a single host, a fleet's reports go out over `send_delay_max` after midnight +
    settle, not all at once; each report's moment is the same on every node."""
    spread = replace(world.deliver, send_delay_max=4 * 3600.0)
    nodes = [world.add(f"n{i}") for i in range(2)]
    for node in nodes:
        node.sender.delivery = spread
        world.feed(node, 3, 0)
    await cross_midnight(world)
    await world.tick()  # midnight + settle: the inputs are frozen, the reports wait
    inputs = await nodes[0].sender.ledger.inputs(DAY)
    merged = merge(decode_all(inputs, DAY))
    delays = sorted(send_delay(dd, spread.send_delay_max) for dd in merged)
    assert len(set(delays)) == 3 and all(0 <= d < 4 * 3600 for d in delays)
    for delay in delays:
        world.clock.now = MIDNIGHT + SETTLE + delay + 1
        sent = sum(map(len, world.reports().values()))
        await world.tick()
        assert sum(map(len, world.reports().values())) == sent + 1


async def test_a_refusing_destination_is_retried_with_back_off_then_sent_once(
    world: World,
) -> None:
    """RFC 8460 §3, §5.5 in the fleet: HTTPS 500 is temporary; with a second rua the mail
    destination takes the report, with none the report waits in `retry` and goes out later."""
    nodes = [world.add("a"), world.add("b")]
    for node in nodes:
        world.feed(node, 2, 0)
    world.https.mode = "500"
    await cross_midnight(world)
    await world.tick()
    mailed = sorted(rcpts[0] for _, rcpts, _ in world.smtp.sink.messages)
    assert mailed == ["r@both.example", "tlsrpt@mail.example"]  # /both refused: mail took it
    assert sorted(p.path for p in world.https.posts) == ["/both", "/web"]  # both answered 500
    field = state_field("web.example", world.records()["web.example"])
    state = (await nodes[0].sender.ledger.states(DAY))[field]
    assert state is not None and state.state == "retry" and state.attempts == 1
    await world.tick()  # not due yet: no new attempt
    assert len(world.https.posts) == 2
    world.https.mode = "200"
    world.clock.now = state.due + 1
    await world.tick()
    await world.tick()
    assert [p.path for p in world.https.posts][2:] == ["/web"]  # accepted, once
    assert len(world.smtp.sink.messages) == 2
    states = await nodes[0].sender.ledger.states(DAY)
    assert {s.state for s in states.values() if s} == {"sent"}


async def test_the_loop_uploads_once_more_at_stop_and_closes_its_client(world: World) -> None:
    """A node stopping (SIGTERM) leaves what it counted in Redis while it is down."""
    node = world.add("a")
    node.reporting.client = node.client
    world.feed(node, 3, 0)
    stop = asyncio.Event()
    stop.set()
    await node.reporting.run(stop)
    key = FleetKeys(PREFIX).snapshot(DAY.isoformat())
    probe = make_node(world.tmp, "probe", world.redis.url, world.clock, world.deliver)
    world.nodes.append(probe)
    assert await probe.client.run(lambda r: r.hexists(key, "a"), "read")
    assert node.uploader.last_upload == {DAY.isoformat(): world.clock.now}
    node.closed = True  # its client is closed already
    node.store.close()


async def test_a_stale_token_cannot_overwrite_a_newer_state(world: World) -> None:
    node = world.add("a")
    ledger = node.sender.ledger
    field = state_field("mail.example", None)
    old = await ledger.take_lease(DAY, field)
    assert old is not None and await ledger.take_lease(DAY, field) is None
    await ledger.release(DAY, field, old)
    new = await ledger.take_lease(DAY, field)
    assert new is not None and new > old
    from mta_sts_policyd.fleet.report_ledger import ReportState

    base = ReportState("sending", new, "a", "rid", "digest")
    assert await ledger.write(DAY, field, base)
    assert not await ledger.write(DAY, field, ReportState("sent", old, "a", "rid", "digest"))
    assert await ledger.write(DAY, field, ReportState("sent", new, "a", "rid", "digest"))
    # final: nobody writes over a sent report, whatever its token
    assert not await ledger.write(DAY, field, ReportState("retry", new + 5, "a", "r", "d"))
    key = FleetKeys(PREFIX).report_state(DAY.isoformat())
    raw = await node.client.run(lambda r: r.hget(key, field), "read")
    assert json.loads(raw)["state"] == "sent"
