"""Feed a Maildir's new messages to the intake; move each one, never delete it.

Taken (stored now or before) -> `cur/` with the Seen flag; rejected -> the Maildir++ folder
`.Rejected` (created when needed); a store failure leaves the message in `new/` for the next
run and stops the scan (StoreError propagates: the caller answers "try again later").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mta_sts_policyd.reports_in.intake import Intake

log = logging.getLogger(__name__)

REJECTED_FOLDER = ".Rejected"


@dataclass
class ScanResult:
    taken: int = 0
    rejected: int = 0


def scan_maildir(root: Path, intake: Intake, keep_taken: bool = True) -> ScanResult:
    """`keep_taken=False` (the host's spool): a taken message is removed, not moved to cur/."""
    result = ScanResult()
    new = root / "new"
    if not new.is_dir():
        raise FileNotFoundError(f"{root} is not a Maildir (no new/ folder)")
    for message in sorted(p for p in new.iterdir() if p.is_file()):
        outcome = intake.take_message(message.read_bytes(), f"maildir:{message.name}")
        if outcome.ok and not keep_taken:
            message.unlink()
            result.taken += 1
        elif outcome.ok:
            _move(message, root / "cur")
            result.taken += 1
        else:
            _move(message, root / REJECTED_FOLDER / "cur")
            result.rejected += 1
    return result


def _move(message: Path, folder: Path) -> None:
    """Maildir delivery into `folder` (tmp/new/cur made), with the Seen flag (`:2,S`)."""
    for sub in ("tmp", "new", "cur"):
        (folder.parent / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    base = message.name.split(":", 1)[0]
    message.rename(folder / f"{base}:2,S")
