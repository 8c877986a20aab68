"""A Sentinel failover while the fleet sends its TLS reports (issue 16): the master dies right
after the first report reached its destination, before `sent` was recorded. The sender keeps
the record, writes it to the new master once Sentinel has promoted the replica, and sends the
other reports there: one report per destination, nothing twice."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from datetime import date
from pathlib import Path

import pytest
import redis
import trustme

from mta_sts_policyd import metrics
from mta_sts_policyd.tlsrpt.deliver import NetworkTransport, Stamp
from mta_sts_policyd.tlsrpt.message import DkimSettings
from mta_sts_policyd.tlsrpt.model import SessionEvent
from mta_sts_policyd.tlsrpt.record import RuaDestination
from mta_sts_policyd.tlsrpt.report import ReportDocument
from support.fleet_reports import Clock, delivery, make_node
from support.redis_server import SentinelSetup
from support.tlsrpt_receivers import HttpsReceiver
from support.tlsrpt_validate import DAY_TS, STS

MIDNIGHT = DAY_TS + 86400


class KillsMasterAfterFirst:
    """The real transport; once the first report is accepted, the Redis master dies."""

    def __init__(self, inner: NetworkTransport, setup: SentinelSetup) -> None:
        self.inner = inner
        self.setup = setup
        self.sent = 0

    def stamp(self, doc: ReportDocument, dest: RuaDestination, date: float) -> Stamp:
        return self.inner.stamp(doc, dest, date)

    async def deliver(
        self, doc: ReportDocument, dest: RuaDestination, stamp: Stamp | None = None
    ) -> None:
        await self.inner.deliver(doc, dest, stamp)
        self.sent += 1
        if self.sent == 1:
            await asyncio.sleep(0.3)  # the `sending` state reaches the replica
            self.setup.master.kill()


def _promoted(setup: SentinelSetup, timeout: float = 20.0) -> bool:
    client = redis.Redis(port=setup.sentinel_port)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            _host, port = client.sentinel_get_master_addr_by_name(SentinelSetup.SERVICE)
            if int(port) == setup.replica.port:
                return True
            time.sleep(0.2)
        return False
    finally:
        client.close()


@pytest.mark.slow
async def test_failover_while_sending_sends_each_report_once(
    tmp_path: Path, trust_ca: trustme.CA
) -> None:
    ca_file = tmp_path / "ca.pem"
    trust_ca.cert_pem.write_to_path(str(ca_file))
    setup = SentinelSetup(tmp_path / "sentinel")
    clock = Clock(DAY_TS + 20 * 3600)
    try:
        with HttpsReceiver(trust_ca) as https:
            deliver = delivery(1, str(ca_file))
            transport = KillsMasterAfterFirst(
                NetworkTransport(deliver, DkimSettings(allow_unsigned=True)), setup
            )
            sentinels = tuple(
                (h, int(p)) for h, _, p in (s.partition(":") for s in setup.sentinels)
            )
            node = make_node(
                tmp_path, "a", SentinelSetup.SERVICE, clock, deliver,
                transport=transport, sentinels=sentinels,
            )  # fmt: skip
            paths = [f"/d{i}" for i in range(4)]
            for path in paths:
                record = f"v=TLSRPTv1;rua={https.url(path)}"
                domain = f"{path[1:]}.example"
                node.store.submit(SessionEvent(DAY_TS + 60, domain, STS, True, (), record, 5))
            duplicates = metrics.FLEET_POSSIBLE_DUPLICATES.read()
            clock.now = MIDNIGHT + 10
            await node.reporting.tick()
            clock.now = MIDNIGHT + 3601
            await node.reporting.tick()  # one report out, then the master is gone
            assert len(https.posts) == 1
            assert _promoted(setup)
            for _ in range(20):  # passes until the breaker lets the new master in
                await node.reporting.tick()
                if len(https.posts) == len(paths):
                    break
                await asyncio.sleep(0.3)
            await node.reporting.tick()
            assert sorted(p.path for p in https.posts) == paths  # each once
            for post in https.posts:
                report = json.loads(gzip.decompress(post.body))
                summary = report["policies"][0]["summary"]
                assert summary["total-successful-session-count"] == 5
            states = await node.sender.ledger.states(date(2026, 11, 21))
            assert {s.state for s in states.values() if s} == {"sent"}
            assert metrics.FLEET_POSSIBLE_DUPLICATES.read() == duplicates
            await node.close()
    finally:
        setup.stop()
