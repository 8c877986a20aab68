"""The monitor's systemd timer/service pair: `systemd-analyze verify` is silent on them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from mta_sts_policyd.tools.check.findings import NagiosStatus
from support import REPO_ROOT

UNITS = REPO_ROOT / "systemd"
NAMES = ("mta-sts-policyd-monitor.service", "mta-sts-policyd-monitor.timer")


def _command() -> str:
    candidate = Path(sysconfig.get_path("scripts")) / "mta-sts-policyd"
    found = str(candidate) if candidate.is_file() else shutil.which("mta-sts-policyd")
    if found is None:
        pytest.fail("mta-sts-policyd console script not installed (pip install -e .)")
    return found


def _install(directory: Path) -> list[Path]:
    paths = []
    for name in NAMES:
        text = (UNITS / name).read_text()
        text = re.sub(r"^ExecStart=\S+", f"ExecStart={_command()}", text, flags=re.MULTILINE)
        (directory / name).write_text(text)
        paths.append(directory / name)
    return paths


def _verify(*units: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd package")
    return subprocess.run(
        [analyze, "verify", "--man=no", "--generators=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_monitor_units_verify_without_any_warning(tmp_path: Path) -> None:
    result = _verify(*_install(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_would_report_a_broken_timer(tmp_path: Path) -> None:
    service, timer = _install(tmp_path)
    timer.write_text(timer.read_text().replace("OnCalendar=", "OnCalender="))
    assert "OnCalender" in (lambda r: r.stdout + r.stderr)(_verify(service, timer))


def test_service_runs_one_pass_and_accepts_nagios_codes() -> None:
    text = (UNITS / NAMES[0]).read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE)
    assert exec_start and exec_start.group(1).split()[1:3] == ["monitor", "--once"]
    success = re.search(r"^SuccessExitStatus=(.*)$", text, re.MULTILINE)
    assert success and success.group(1).split() == [str(int(s)) for s in list(NagiosStatus)[1:]]
    assert "Type=oneshot" in text and "StateDirectory=mta-sts-policyd" in text
