"""Fleet-mode report nodes in one process: each with its own SQLite store, Redis client and
report sender, against one real redis-server and the loopback report receivers."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from mta_sts_policyd.fleet.breaker import CircuitBreaker
from mta_sts_policyd.fleet.connection import FleetClient, FleetSettings, open_redis
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.report_delivery import ReportDelivery, StampingTransport
from mta_sts_policyd.fleet.report_ledger import ReportLedger
from mta_sts_policyd.fleet.report_runner import FleetReporting
from mta_sts_policyd.fleet.report_sender import FleetReportSender
from mta_sts_policyd.fleet.report_upload import SnapshotUploader
from mta_sts_policyd.tlsrpt.deliver import DeliverySettings, NetworkTransport
from mta_sts_policyd.tlsrpt.message import DkimSettings
from mta_sts_policyd.tlsrpt.report import ReportSettings
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore

REPORT = ReportSettings("Fleet Org", "tlsrpt@sender.example")
PREFIX = "t"


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


def fleet_settings(url: str, sentinels: tuple[tuple[str, int], ...] = ()) -> FleetSettings:
    """`url` is a redis:// URL, or with `sentinels` the Sentinel service's name."""
    return FleetSettings(
        redis_url="" if sentinels else url, sentinels=sentinels,
        service=url if sentinels else "", password=None, ca_file=None,
        key_prefix=PREFIX, node_name="n", connect_timeout=0.5, command_timeout=2.0,
        breaker_failures=1, breaker_reset=0.3, fetch_lock=5.0, entry_grace=60.0,
        revalidate_interval=60.0, refresh_lease=60.0, refresh_batch=10, forget_after=3600.0,
        snapshot_interval=300.0, report_settle=3600.0, report_deadline=6 * 3600.0,
    )  # fmt: skip


def delivery(smtp_port: int, ca_file: str) -> DeliverySettings:
    return DeliverySettings(
        envelope_sender="bounces@sender.example",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_timeout=5.0,
        https_timeout=5.0,
        https_ca_file=ca_file,
        allow_private_destinations=True,
        send_delay_max=0.0,  # the spread over the morning is tested on its own
    )


@dataclass
class Node:
    name: str
    store: TlsRptStore
    client: FleetClient
    uploader: SnapshotUploader
    sender: FleetReportSender
    reporting: FleetReporting
    closed: bool = field(default=False)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.store.close()
            await self.client.aclose()


def make_node(
    root: Path,
    name: str,
    redis_url: str,
    clock: Clock,
    deliver: DeliverySettings,
    *,
    dkim: DkimSettings | None = None,
    transport: StampingTransport | None = None,
    lease: float = 30.0,
    settle: float = 3600.0,
    deadline: float = 6 * 3600.0,
    sentinels: tuple[tuple[str, int], ...] = (),
) -> Node:
    store = TlsRptStore(root / f"{name}.db", flush_interval=3600)
    keys = FleetKeys(PREFIX)
    client = FleetClient(
        open_redis(fleet_settings(redis_url, sentinels)),
        keys,
        CircuitBreaker(1, 0.3, time.monotonic),
    )
    ledger = ReportLedger(client, keys, lease_seconds=lease, keep_seconds=9 * 86400)
    reports = ReportDelivery(
        ledger,
        REPORT,
        deliver,
        transport or NetworkTransport(deliver, dkim or DkimSettings(allow_unsigned=True)),
        node=name,
        clock=clock,
        rng=random.Random(name),
    )
    sender = FleetReportSender(reports, settle=settle, deadline=deadline)
    uploader = SnapshotUploader(
        client, keys, store, name, deadline=deadline, keep_seconds=9 * 86400, clock=clock
    )
    reporting = FleetReporting(store, uploader, sender, snapshot_interval=300.0, clock=clock)
    return Node(name, store, client, uploader, sender, reporting)
