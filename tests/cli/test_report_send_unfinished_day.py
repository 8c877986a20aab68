"""Issue 11 item 14: `report send --day D` refuses a UTC day that has not ended yet.

The real CLI (`main`) with a real config file, a real store and a real SMTP receiver: a report
of today would carry a `Date` before the end of its own period, and a delivered job for today
would stop the daemon from ever sending the complete day after midnight.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.tlsrpt.model import PolicyRef, PolicyType, SessionEvent
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support.daemon_process import toml_text
from support.tlsrpt_receivers import SmtpReceiver

pytestmark = pytest.mark.fault

RECORD = "v=TLSRPTv1; rua=mailto:tlsrpt@rcpt.example"


def reporting_config(tmp_path: Path, smtp_port: int, **tables: dict[str, object]) -> Path:
    """Reporting on, unsigned, through the test's relay; `tables` adds sections (e.g. fleet)."""
    path = tmp_path / "config.toml"
    path.write_text(
        toml_text(
            {
                "cache": {"state_dir": str(tmp_path)},
                "tlsrpt": {
                    "enabled": True,
                    "socket": "",
                    "organization_name": "Example Sender",
                    "contact_info": "tlsrpt@sender.example",
                    "envelope_sender": "tlsrpt@sender.example",
                    "allow_unsigned": True,
                    "smtp_relay": f"127.0.0.1:{smtp_port}",
                },
                **tables,
            }
        )
    )
    return path


def _fill(tmp_path: Path, *stamps: float) -> None:
    with TlsRptStore(tmp_path / "tlsrpt.sqlite") as store:
        for stamp in stamps:
            ref = PolicyRef(PolicyType.NO_POLICY_FOUND, "rcpt.example")
            store.submit(SessionEvent(stamp, "rcpt.example", ref, True, tlsrpt_record=RECORD))


def test_send_refuses_a_day_that_has_not_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    today = datetime.fromtimestamp(now, UTC).date()
    yesterday = today - timedelta(days=1)
    _fill(tmp_path, now, now - 86400)
    with SmtpReceiver() as receiver:
        config = str(reporting_config(tmp_path, receiver.port))
        code = main(["report", "send", "-c", config, "--day", today.isoformat()])
        err = capsys.readouterr().err
        assert code == 64
        assert f"{today.isoformat()} has not ended" in err and "report show" in err
        assert receiver.sink.messages == []  # nothing sent ...
        assert main(["report", "status", "-c", config, "--json"]) == 1  # ... and no job made
        capsys.readouterr()
        # a finished day still goes out
        assert main(["report", "send", "-c", config, "--day", yesterday.isoformat()]) == 0
        assert len(receiver.sink.messages) == 1
        assert "delivered" in capsys.readouterr().out
    assert main(["report", "status", "-c", config, "--json"]) == 0
    (job,) = json.loads(capsys.readouterr().out)
    assert job["day"] == yesterday.isoformat() and job["state"] == "delivered"


def test_outbox_of_an_unfinished_day_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    _fill(tmp_path, now)
    outbox = tmp_path / "out"
    config = str(reporting_config(tmp_path, 1))
    today = datetime.fromtimestamp(now, UTC).date().isoformat()
    code = main(["report", "send", "-c", config, "--day", today, "--outbox", str(outbox)])
    assert code == 64 and "has not ended" in capsys.readouterr().err
    assert not outbox.exists()
