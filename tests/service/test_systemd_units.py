"""systemd units: `systemd-analyze verify` is silent on them and on every documented drop-in.

`systemd-analyze` must be installed (CI installs Debian's `systemd`); a missing binary fails
the tests instead of skipping them. Verification works without systemd as PID 1.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from mta_sts_policyd.config.settings import DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR, Config
from mta_sts_policyd.state_files import DIR_MODE
from support import REPO_ROOT

UNITS = REPO_ROOT / "systemd"
SERVICE = "mta-sts-policyd.service"
SOCKET = "mta-sts-policyd.socket"
DROPIN_HEADER = re.compile(r"^# /etc/systemd/system/mta-sts-policyd\.service\.d/([\w-]+\.conf)$")
EXEC_START = re.compile(r"^(ExecStart=)\S*/mta-sts-policyd(\s)", re.MULTILINE)


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd package")
    return found


def command_path() -> str:
    """The `mta-sts-policyd` script of this test install (verify checks it is executable)."""
    candidate = Path(sysconfig.get_path("scripts")) / "mta-sts-policyd"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("mta-sts-policyd")
    if found is None:
        pytest.fail("mta-sts-policyd console script not installed (pip install -e .)")
    return found


def with_real_command(text: str) -> str:
    return EXEC_START.sub(lambda m: f"{m.group(1)}{command_path()}{m.group(2)}", text)


def install_units(directory: Path) -> list[Path]:
    paths = []
    for name in (SERVICE, SOCKET):
        target = directory / name
        target.write_text(with_real_command((UNITS / name).read_text()))
        paths.append(target)
    return paths


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze(), "verify", "--man=no", "--generators=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def readme_dropins() -> dict[str, str]:
    """The ```ini blocks of systemd/README.md that start with their drop-in file name."""
    dropins = {}
    for block in re.findall(r"```ini\n(.*?)```", (UNITS / "README.md").read_text(), re.DOTALL):
        header = DROPIN_HEADER.match(block.splitlines()[0])
        assert header, f"ini block without a drop-in file name: {block!r}"
        dropins[header.group(1)] = block
    return dropins


def settings(name: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file; keys may repeat, as systemd allows."""
    section, out = "", []
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            out.append((section, key, value))
    return out


def values(name: str, key: str) -> list[str]:
    return [v for _, k, v in settings(name) if k == key]


def test_units_verify_without_any_warning(tmp_path: Path) -> None:
    result = verify(*install_units(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_reports_a_bad_key_so_silence_means_something(tmp_path: Path) -> None:
    service, _ = install_units(tmp_path)
    service.write_text(service.read_text().replace("ProtectClock=", "ProtectClok="))
    result = verify(service)
    assert "ProtectClok" in result.stdout + result.stderr


def test_readme_dropins_verify_without_any_warning(tmp_path: Path) -> None:
    dropins = readme_dropins()
    assert {"tlsrpt.conf", "tlsrpt-chroot.conf", "dkim.conf", "path.conf", "journal.conf"} <= set(
        dropins
    )
    service, socket = install_units(tmp_path)
    (tmp_path / f"{SERVICE}.d").mkdir()
    for name, text in dropins.items():
        (tmp_path / f"{SERVICE}.d" / name).write_text(with_real_command(text))
    result = verify(service, socket)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_service_settings_required_by_issue_3() -> None:
    s = SERVICE
    assert values(s, "Type") == ["notify"]
    assert values(s, "RestartPreventExitStatus") == ["78"]  # config error: do not loop
    assert values(s, "Restart") == ["on-failure"]
    assert re.fullmatch(r"\S*kill -HUP \$MAINPID", values(s, "ExecReload")[0])
    # Debian's real Postfix is the instance postfix@-.service; Before= also orders the stop.
    assert values(s, "Before") == ["postfix.service postfix@-.service"]
    assert values(SOCKET, "Before") == ["postfix.service postfix@-.service"]
    assert "network-online.target" in values(s, "Wants")
    assert "network-online.target" in values(s, "After")[0].split()
    assert values(s, "DynamicUser") == ["yes"]
    assert values(s, "CapabilityBoundingSet") == [""]
    assert values(s, "RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
    assert values(s, "SystemCallFilter")[0] == "@system-service"
    assert values(s, "SystemCallArchitectures") == ["native"]
    assert values(s, "ProtectSystem") == ["strict"]
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictRealtime",
        "RestrictSUIDSGID",
    ):
        assert values(s, key) == ["yes"], key


def test_units_agree_with_config_defaults() -> None:
    """The units and config.py must name the same paths and listener."""
    defaults = Config()
    exec_start = values(SERVICE, "ExecStart")[0].split()
    assert exec_start[1:] == ["serve"]  # no --config: runs on defaults without the file
    assert values(SERVICE, "StateDirectory") == [Path(DEFAULT_STATE_DIR).name]
    assert values(SERVICE, "StateDirectoryMode") == [oct(DIR_MODE).replace("o", "")]  # 0700
    assert values(SERVICE, "ConfigurationDirectory") == [DEFAULT_CONFIG_PATH.parent.name]
    runtime = Path("/run") / values(SERVICE, "RuntimeDirectory")[0]
    assert Path(defaults.tlsrpt.socket).parent == runtime
    assert values(SOCKET, "ListenStream") == [defaults.server.listen[0]]


def test_security_exposure_stays_low(tmp_path: Path) -> None:
    service, _ = install_units(tmp_path)
    result = subprocess.run(
        [analyze(), "security", "--offline=yes", "--no-pager", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout + result.stderr)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 1.5
