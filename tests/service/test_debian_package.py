"""The Debian package (debian/, pybuild) builds with dpkg-buildpackage, passes lintian without
errors or warnings, and installs the units (pointing at /usr/bin), man pages, bash completion
and the sample configuration; the unpacked package's units pass `systemd-analyze verify`.

Slow (a full package build). Needs Debian's dpkg-dev, debhelper, dh-python,
pybuild-plugin-pyproject, python3-all and lintian (.ci/setup installs them).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from support import REPO_ROOT

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's python3, not a virtualenv's
IGNORE = shutil.ignore_patterns(".git", ".venv*", ".pybuild", "__pycache__", "*.egg-info", "build")


def run(argv: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env={"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"},
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            pytest.fail(f"{tool} not found: run .ci/setup (Debian packaging tools)")
    top = tmp_path_factory.mktemp("deb")
    source = top / "mta-sts-policyd-0.1.0"
    shutil.copytree(REPO_ROOT, source, ignore=IGNORE)
    done = run(["dpkg-buildpackage", "-us", "-uc", "-b"], source)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (deb,) = top.glob("mta-sts-policyd_*_all.deb")
    return deb


@pytest.mark.slow
def test_lintian_finds_no_error_or_warning(built: Path) -> None:
    (changes,) = built.parent.glob("mta-sts-policyd_*.changes")
    done = run(["lintian", "--tag-display-limit", "0", str(changes)], built.parent)
    tags = [line for line in done.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert (done.returncode, tags) == (0, [])


@pytest.mark.slow
def test_package_contents_and_units_verify(built: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert run(["dpkg-deb", "-x", str(built), str(root)], tmp_path).returncode == 0
    for path in (
        "usr/bin/mta-sts-policyd",
        "lib/systemd/system/mta-sts-policyd.service",
        "lib/systemd/system/mta-sts-policyd.socket",
        "usr/share/man/man8/mta-sts-policyd.8.gz",
        "usr/share/man/man5/mta-sts-policyd.toml.5.gz",
        "usr/share/bash-completion/completions/mta-sts-policyd",
        "usr/share/doc/mta-sts-policyd/examples/config.toml",
    ):
        assert (root / path).exists(), path
    unit = (root / "lib/systemd/system/mta-sts-policyd.service").read_text()
    assert "ExecStart=/usr/bin/mta-sts-policyd serve\n" in unit
    depends = run(["dpkg-deb", "-f", str(built), "Depends"], tmp_path).stdout
    for package in ("python3-dnspython", "python3-httpx", "python3-sqlitedict", "python3-dkim"):
        assert package in depends
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True,
                    dirs_exist_ok=True)  # fmt: skip
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/kill", root / "bin/kill")
    units = [str(root / "lib/systemd/system" / n) for n in ("mta-sts-policyd.service",
                                                          "mta-sts-policyd.socket")]  # fmt: skip
    done = run(["systemd-analyze", "verify", "--man=no", "--generators=no", f"--root={root}",
                *units], tmp_path)  # fmt: skip
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
