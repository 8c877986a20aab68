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


SMOKE = """\
[Unit]
Wants=mta-sts-policyd.service
After=mta-sts-policyd.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c '\\
  systemctl is-active mta-sts-policyd.service > /out/active; \\
  /usr/bin/mta-sts-policyd query --json nothing.invalid > /out/query.json; \\
  journalctl -u mta-sts-policyd -o cat --no-pager > /out/journal.txt; \\
  systemctl poweroff'
"""
RUNTIME = ("dns", "httpx", "sqlitedict", "dkim", "prometheus_client", "sniffio", "cryptography")


@pytest.mark.slow
def test_the_installed_package_runs_under_systemd(built: Path, tmp_path: Path) -> None:
    """Debian's own python3 and its python3-* packages (the Depends), the package's /usr over
    this machine's /usr, its units in /etc: systemd starts the daemon and it answers."""
    binary = shutil.which("systemd-nspawn", path=SYSTEM_PATH)
    if binary is None:
        pytest.fail("systemd-nspawn not found: install systemd-container (.ci/setup)")
    missing = run(["python3", "-c", f"import {', '.join(RUNTIME)}"], tmp_path)
    assert missing.returncode == 0, f"the package's Depends are not installed: {missing.stderr}"
    root, out = tmp_path / "root", tmp_path / "out"
    out.mkdir()
    assert run(["dpkg-deb", "-x", str(built), str(root)], tmp_path).returncode == 0
    (tmp_path / "smoke.service").write_text(SMOKE)
    (tmp_path / "default.target").write_text("[Unit]\nRequires=basic.target smoke.service\n")
    binds = [f"--overlay-ro=/usr:{root / 'usr'}:/usr", f"--bind={out}:/out"]
    for name in ("mta-sts-policyd.service", "mta-sts-policyd.socket"):
        binds.append(f"--bind-ro={root / 'lib/systemd/system' / name}:/etc/systemd/system/{name}")
    for name in ("smoke.service", "default.target"):
        binds.append(f"--bind-ro={tmp_path / name}:/etc/systemd/system/{name}")
    resolv = tmp_path / "resolv.conf"  # a private network: nothing on this host's ports interferes
    resolv.write_text("nameserver 127.0.0.1\n")
    done = run([binary, "-D", "/", "--volatile=yes", "--register=no", "--keep-unit", "-q", "-b",
         "--private-network", "--resolv-conf=off", f"--bind-ro={resolv}:/etc/resolv.conf",
         # masked: it would wait 2 minutes for a network the private namespace never gets
         "--bind-ro=/dev/null:/etc/systemd/system/systemd-networkd-wait-online.service",
                "--console=pipe", *binds], tmp_path, timeout=240)  # fmt: skip
    journal = (out / "journal.txt").read_text() if (out / "journal.txt").exists() else ""
    assert (out / "active").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "active").read_text() == "active\n", journal
    assert '"reply": "NOTFOUND "' in (out / "query.json").read_text(), journal
    assert "Traceback" not in journal
