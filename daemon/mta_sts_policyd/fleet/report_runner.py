"""Fleet-mode reporting loop: upload this node's snapshots, send the fleet's reports, and prune
the local store only of days the fleet has finished with. Replaces the local ReportSender in
fleet mode (both running would send every report twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.fleet.connection import FleetClient
from mta_sts_policyd.fleet.report_sender import FleetReportSender
from mta_sts_policyd.fleet.report_upload import SnapshotUploader
from mta_sts_policyd.tlsrpt.sender import midnight_after
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore, utc_day

log = logging.getLogger(__name__)

MIDNIGHT_LAG = 5.0
"""Seconds after 00:00 UTC for the final upload: the store's last flush of the day is in."""
SEND_PASS = 60.0
"""Seconds between passes of the sender (it also runs after each upload)."""


class FleetReporting:
    def __init__(
        self,
        store: TlsRptStore,
        uploader: SnapshotUploader,
        sender: FleetReportSender,
        *,
        snapshot_interval: float,
        client: FleetClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.uploader = uploader
        self.sender = sender
        self.snapshot_interval = snapshot_interval
        self.client = client
        """Closed when the loop ends (the reports' own Redis connection)."""
        self.clock = clock
        self._next_upload = 0.0

    async def tick(self) -> float:
        """One pass; returns when the next one is due."""
        now = self.clock()
        if now >= self._next_upload:
            try:
                await self.uploader.tick()
                if not self.uploader.held:  # held back (node name): tried on the next pass
                    self._next_upload = min(
                        now + self.snapshot_interval, midnight_after(utc_day(now)) + MIDNIGHT_LAG
                    )
            except FleetUnavailable:  # tried again on the next pass (the sender logs it)
                pass
        await self.sender.tick()
        today = utc_day(self.clock())
        await asyncio.to_thread(self.store.prune, today, self.sender.open_days(today))
        return min(self._next_upload, self.clock() + SEND_PASS)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                nxt = await self.tick()
            except Exception:  # a broken pass must not end reporting for good
                log.exception("event=fleet-reports-pass-failed")
                nxt = self.clock() + SEND_PASS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(nxt - self.clock(), 1.0))
        try:  # one last upload: what this node counted is in Redis while it is down
            await self.uploader.tick()
        except FleetUnavailable:
            log.info("event=fleet-snapshot-not-uploaded-at-stop")
        finally:
            if self.client is not None:
                await self.client.aclose()
