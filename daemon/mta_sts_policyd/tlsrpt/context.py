"""What a TLS-RPT report run needs, as objects: the daemon's sender and the `report` commands.

Filled from the configuration by the composition root (service/composition.py); the running
daemon and the CLI both take it from there, so neither builds report settings of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mta_sts_policyd.tlsrpt.deliver import DeliverySettings
from mta_sts_policyd.tlsrpt.message import DkimSettings
from mta_sts_policyd.tlsrpt.record import TxtLookup
from mta_sts_policyd.tlsrpt.report import ReportSettings


@dataclass(frozen=True)
class ReportContext:
    """The report settings, delivery, DKIM, the store's path and the `_smtp._tls` lookup."""

    store_path: Path
    report: ReportSettings
    delivery: DeliverySettings
    dkim: DkimSettings
    retention_days: int = 31
    txt_lookup: TxtLookup | None = None
    """`_smtp._tls` resolver for records not supplied by the producer (record_lookup.py)."""
    out: TextIO | None = None
    """Where the `report` commands print (None: standard output)."""
