"""What a TLS-RPT report run needs, as objects: the daemon's sender and the `report` commands.

Filled from the configuration by the composition root (service/composition.py); the running
daemon and the CLI both take it from there, so neither builds report settings of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mta_sts_policyd.tlsrpt.deliver import DeliverySettings, NetworkTransport
from mta_sts_policyd.tlsrpt.message import DkimSettings
from mta_sts_policyd.tlsrpt.record import TxtQuery
from mta_sts_policyd.tlsrpt.report import ReportSettings
from mta_sts_policyd.tlsrpt.sender import ReportSender
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore


@dataclass(frozen=True)
class ReportContext:
    """The report settings, delivery, DKIM, the store's path and the `_smtp._tls` lookup."""

    store_path: Path
    report: ReportSettings
    delivery: DeliverySettings
    dkim: DkimSettings
    retention_days: int = 31
    txt_lookup: TxtQuery | None = None
    """`_smtp._tls` resolver for records not supplied by the producer (record_lookup.py)."""
    out: TextIO | None = None
    """Where the `report` commands print (None: standard output)."""
    clock: Callable[[], float] = time.time
    """Unix time now (`report send` refuses a day that has not ended)."""
    fleet: bool = False
    """Fleet mode: the fleet sends each report once for every node (docs/fleet.md), so
    `report send` refuses to send this node's counts alone (a second, partial report)."""

    def open_store(self) -> TlsRptStore:
        """The aggregates store (created when missing); blocking, call it off the loop."""
        return TlsRptStore(self.store_path, retention_days=self.retention_days)

    def sender(self, store: TlsRptStore) -> ReportSender:
        """The report sender over the network (mail with DKIM, HTTPS), as the daemon runs it."""
        transport = NetworkTransport(self.delivery, self.dkim)
        return ReportSender(
            store, self.report, self.delivery, transport, txt_lookup=self.txt_lookup
        )
