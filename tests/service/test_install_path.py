"""The README's install, done into a scratch root, leaves the command exactly where the shipped
systemd units run it; `systemd-analyze verify --root` then checks the units as shipped (no
edits): unit syntax, ordering targets, and that every executable exists in that root.

Offline adaptations only: `pip install .` installs the wheel of this tree built beforehand by
the test interpreter (`--no-deps --no-index`: the dependencies are not what this checks), and
every absolute path is prefixed with the root.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT

README = REPO_ROOT / "README.md"
UNITS = ("mta-sts-policyd.service", "mta-sts-policyd.socket")
SYSTEM_UNITS = Path("/lib/systemd/system")


def readme_install_steps() -> list[list[str]]:
    """The `&&`-separated commands of the one-line install in README "Install and run"."""
    section = README.read_text().split("## Install and run", 1)[1]
    block = re.search(r"```sh\n(.*?)\n```", section, re.DOTALL)
    assert block, "README: no install command block"
    return [shlex.split(part) for part in block.group(1).split("&&")]


def in_root(root: Path, argv: list[str]) -> list[str]:
    return [str(root) + a if a.startswith(("/opt/", "/usr/")) else a for a in argv]


def build_wheel(directory: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(directory), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = directory.glob("mta_sts_policyd-*.whl")
    return wheel


def run_step(root: Path, argv: list[str], wheel: Path) -> None:
    if argv[:2] == ["apt-get", "install"] or argv[1:2] == ["serve"]:
        return  # packages are CI's job; `serve` would run in the foreground
    if argv[:3] == ["python3", "-m", "venv"]:
        argv = [shutil.which("python3") or "/usr/bin/python3", *argv[1:]]
    elif argv[0].endswith("/bin/pip"):
        assert argv[2].startswith("."), argv  # the README installs this tree
        argv = [*argv[:2], "--no-deps", "--no-index", "-q", str(wheel)]
    elif argv[:2] == ["ln", "-sf"]:
        (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)
        target, link = argv[2], argv[3]  # the link keeps its absolute target: systemd follows it
        argv = ["ln", "-sf", target, str(root) + link]  # inside --root
    else:
        pytest.fail(f"README install step this test does not know: {argv}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(in_root(root, argv) if argv[0] != "ln" else argv, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, (argv, done.stdout, done.stderr)


@pytest.mark.slow
def test_readme_install_puts_the_command_where_the_units_run_it(tmp_path: Path) -> None:
    root, wheel = tmp_path / "root", build_wheel(tmp_path / "wheel")
    for argv in readme_install_steps():
        run_step(root, argv, wheel)
    command = root / "usr/local/bin/mta-sts-policyd"
    assert command.is_symlink() and (root / str(command.readlink()).lstrip("/")).is_file()
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:  # systemd/README.md: install -m 0644 systemd/... /etc/systemd/system/
        shutil.copyfile(REPO_ROOT / "systemd" / name, units / name)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir()
    shutil.copy2("/bin/kill", root / "bin/kill")  # ExecReload=/bin/kill
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--generators=no", f"--root={root}",
         *(str(units / n) for n in UNITS)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # And without the README's link the same verification fails: the check has teeth.
    command.unlink()
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--generators=no", f"--root={root}",
         str(units / UNITS[0])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "/usr/local/bin/mta-sts-policyd is not executable" in done.stderr
