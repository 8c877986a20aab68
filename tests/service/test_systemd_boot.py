"""A real systemd runs the units as shipped (issue 12 item 1): systemd-nspawn boots this
machine's /usr with a fresh /etc holding only our units; the daemon starts without a config
file, as its dynamic user, on the socket unit's listener, answers `query`, and its journal lines
carry their priority (journald strips the `<6>` prefix it parsed).

The command is a virtual environment at /opt/mta-sts-policyd linked from /usr/local/bin, as the
README installs it; its packages come from the test interpreter (bind-mounted read-only).
Needs root with CAP_SYS_ADMIN and systemd-nspawn (Debian's systemd-container, .ci/setup).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from support import REPO_ROOT

SMOKE = """\
[Unit]
Wants=mta-sts-policyd.service
After=mta-sts-policyd.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c '\\
  systemctl is-active mta-sts-policyd.service > /out/active; \\
  systemctl show -p User,Result mta-sts-policyd.service > /out/show; \\
  /usr/local/bin/mta-sts-policyd query --json nothing.invalid > /out/query.json; \\
  echo $? > /out/query.rc; \\
  journalctl -u mta-sts-policyd -o json --no-pager > /out/journal.json; \\
  systemctl poweroff'
"""
TARGET = """\
[Unit]
Requires=basic.target smoke.service
After=basic.target
"""


def nspawn() -> str:
    found = shutil.which("systemd-nspawn")
    if found is None:
        pytest.skip("systemd-nspawn not installed (Debian's systemd-container; .ci/setup)")
    if os.geteuid() != 0:
        pytest.skip("systemd-nspawn needs root")
    return found


SITE_IN_CONTAINER = "/srv/test-site-packages"
SOURCE_IN_CONTAINER = "/srv/test-source"
"""Where the test's packages and this checkout's source appear inside the container: fixed
paths outside /tmp, which the container's own tmp.mount covers (a checkout under /tmp, as CI
may use, would vanish behind it)."""


def command_venv(directory: Path) -> Path:
    """/opt/mta-sts-policyd as the README makes it, with this test run's packages."""
    python = Path("/usr/bin/python3")
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(directory)], check=True)
    site = next((directory / "lib").glob("python3.*/site-packages"))
    (site / "tests.pth").write_text(f"{SITE_IN_CONTAINER}\n{SOURCE_IN_CONTAINER}\n")
    script = directory / "bin" / "mta-sts-policyd"
    script.write_text("#!/opt/mta-sts-policyd/bin/python3\nimport sys\n"
                      "from mta_sts_policyd.cli.main import main\nsys.exit(main())\n")  # fmt: skip
    script.chmod(0o755)
    return directory


def boot_container(tmp_path: Path, smoke: str, extra_binds: list[str]) -> tuple[Path, list[Any]]:
    """Boot this machine's /usr in a private network, the package installed as the README
    says, `smoke` as the unit that drives the test, plus `extra_binds` (nspawn options: the
    shipped units and files under test); returns the /out folder and the journal records the
    smoke unit saved there."""
    binary = nspawn()
    if sys.version_info[:2] != (3, 11) or not Path("/usr/bin/python3.11").exists():
        pytest.skip("the bind-mounted packages need the system's python3.11")
    venv, links, out, units = (tmp_path / n for n in ("venv", "bin", "out", "units"))
    command_venv(venv)
    for d in (links, out, units):
        d.mkdir()
    (links / "mta-sts-policyd").symlink_to("/opt/mta-sts-policyd/bin/mta-sts-policyd")
    (units / "smoke.service").write_text(smoke)
    (units / "default.target").write_text(TARGET)
    binds = [f"--bind-ro={venv}:/opt/mta-sts-policyd", f"--bind-ro={links}:/usr/local/bin",
             f"--bind-ro={sysconfig.get_paths()['purelib']}:{SITE_IN_CONTAINER}",
             f"--bind-ro={REPO_ROOT / 'daemon'}:{SOURCE_IN_CONTAINER}",
             f"--bind={out}:/out", *extra_binds]  # fmt: skip
    for unit in units.iterdir():
        binds.append(f"--bind-ro={unit}:/etc/systemd/system/{unit.name}")
    resolv = tmp_path / "resolv.conf"  # a private network: nothing on this host's ports interferes
    resolv.write_text("nameserver 127.0.0.1\n")
    done = subprocess.run(
        [binary, "-D", "/", "--volatile=yes", "--register=no", "--keep-unit", "-q", "-b",
         "--private-network", "--resolv-conf=off", f"--bind-ro={resolv}:/etc/resolv.conf",
         # masked: it would wait 2 minutes for a network the private namespace never gets
         "--bind-ro=/dev/null:/etc/systemd/system/systemd-networkd-wait-online.service",
         "--console=pipe", *binds],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert (out / "active").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "journal.json").read_text().splitlines()]
    return out, records


@pytest.mark.slow
def test_systemd_starts_the_shipped_unit_and_it_answers(tmp_path: Path) -> None:
    shipped = [
        f"--bind-ro={REPO_ROOT / 'systemd' / name}:/etc/systemd/system/{name}"
        for name in ("mta-sts-policyd.service", "mta-sts-policyd.socket")
    ]
    out, records = boot_container(tmp_path, SMOKE, shipped)
    journal = "\n".join(str(r.get("MESSAGE", "")) for r in records)
    assert (out / "active").read_text() == "active\n", journal
    assert "User=mta-sts-policyd" in (out / "show").read_text()
    assert (out / "query.rc").read_text() == "1\n"  # NOTFOUND: the daemon answered
    assert json.loads((out / "query.json").read_text())["reply"] == "NOTFOUND "
    ours = [r for r in records if "event=" in str(r.get("MESSAGE", ""))]
    ready = next(r for r in ours if "event=ready" in r["MESSAGE"])
    assert ready["PRIORITY"] == "6" and not ready["MESSAGE"].startswith("<")
    assert any("event=listening source=systemd" in r["MESSAGE"] for r in ours)
