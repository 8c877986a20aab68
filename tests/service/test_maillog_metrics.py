"""The running daemon exports its log follower's counters: what it read, skipped and reported
(issue 11 item 16: a skipped over-long line or NUL region must be visible, not only logged).

In-process daemon with its real file follower; the log gets 4 MiB of NULs (what a crash
leaves) and then the real capture may-trusted.log, re-stamped to now.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import StsWorld
from mta_sts_policyd import metrics
from mta_sts_policyd.config.settings import config_from_mapping
from mta_sts_policyd.service.daemon import Daemon
from support import TESTS_DIR
from support.ports import free_port

pytestmark = pytest.mark.fault

CAPTURE = TESTS_DIR / "fixtures" / "maillog" / "may-trusted.log"


def restamped(now: float) -> bytes:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%b %e %H:%M:%S")
    return "".join(stamp + ln[15:] + "\n" for ln in CAPTURE.read_text().splitlines()).encode()


def sample(name: str) -> float:
    got = metrics.REGISTRY.get_sample_value(metrics.PREFIX + name)
    assert got is not None, name
    return got


async def test_skipped_lines_and_sessions_are_metrics(sts_world: StsWorld, tmp_path: Path) -> None:
    maillog = tmp_path / "mail.log"
    maillog.write_bytes(b"")
    config = config_from_mapping(
        {
            "server": {"listen": [f"127.0.0.1:{free_port()}"], "sts_attributes": False},
            "discovery": {"nameservers": [sts_world.dns.nameserver], "dns_timeout": 1.0},
            "cache": {"state_dir": str(tmp_path / "state")},
            "probe": {"enabled": False},
            "tlsrpt": {
                "enabled": True,
                "socket": "",
                "organization_name": "Example Sender",
                "contact_info": "tlsrpt@sender.test",
                "envelope_sender": "tlsrpt@sender.test",
                "allow_unsigned": True,
            },
            "maillog": {"enabled": True, "path": str(maillog)},
        }
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        before = {n: sample(n) for n in ("maillog_lines_skipped_total", "maillog_sessions_total")}
        with maillog.open("ab") as fh:
            fh.write(b"\0" * (4 << 20) + restamped(time.time()))
        for _ in range(300):
            if sample("maillog_sessions_total") > before["maillog_sessions_total"]:
                break
            await asyncio.sleep(0.02)
        assert sample("maillog_sessions_total") == before["maillog_sessions_total"] + 1
        assert sample("maillog_lines_skipped_total") == before["maillog_lines_skipped_total"] + 1
        assert sample("maillog_lines_total") >= len(CAPTURE.read_text().splitlines())
    finally:
        await daemon.stop()
