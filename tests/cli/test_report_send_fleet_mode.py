"""In fleet mode `report send` does not send: the fleet sends each report once with every
node's counts (docs/fleet.md), and this node's counts alone would be a second, partial report;
`--outbox` still writes it for a look."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_report_send_unfinished_day import reporting_config

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.tlsrpt.model import PolicyRef, PolicyType, SessionEvent
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support.tlsrpt_receivers import SmtpReceiver

RECORD = "v=TLSRPTv1; rua=mailto:tlsrpt@rcpt.example"


def test_report_send_refuses_in_fleet_mode_and_outbox_still_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    with TlsRptStore(tmp_path / "tlsrpt.sqlite") as store:
        ref = PolicyRef(PolicyType.NO_POLICY_FOUND, "rcpt.example")
        store.submit(SessionEvent(time.time() - 86400, "rcpt.example", ref, True, (), RECORD))
    with SmtpReceiver() as receiver:
        config = reporting_config(tmp_path, receiver.port, fleet={"redis": "redis://127.0.0.1:1/0"})
        day = yesterday.isoformat()
        assert main(["report", "send", "-c", str(config), "--day", day]) == 64
        assert "fleet mode is on" in capsys.readouterr().err
        assert receiver.sink.messages == []
        outbox = tmp_path / "out"
        code = main(["report", "send", "-c", str(config), "--day", day, "--outbox", str(outbox)])
        assert code == 0 and len(list(outbox.glob("*.eml"))) == 1
        assert receiver.sink.messages == []
