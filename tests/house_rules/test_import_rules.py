"""House rules as tests: the import contracts of pyproject.toml ([tool.importlinter]) hold.

`lint-imports` checks the layers between the parts, that pure code imports nothing with I/O,
that only `service` and `cli` read the configuration, and that there is no import cycle. The
second test plants one violation of each kind in a copy of the package and checks that the
linter names the broken contract, so a contract that silently stopped matching would show.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the linter on the package under `root`/daemon with `root`/pyproject.toml."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{root / 'daemon'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_are_kept() -> None:
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


VIOLATIONS = [
    pytest.param(
        "sts/match.py",
        "from mta_sts_policyd.cli import main as _main  # noqa\n",
        "Layers:",
        id="pure-rfc-code-imports-the-cli",
    ),
    pytest.param(
        "service/control.py",
        "from mta_sts_policyd.cli import main as _main  # noqa\n",
        "Layers:",
        id="daemon-imports-the-cli",
    ),
    pytest.param(
        "postfix/policy_reply.py",
        "import socket as _socket  # noqa\n",
        "Pure code imports nothing that does I/O",
        id="reply-rendering-imports-socket",
    ),
    pytest.param(
        "tlsrpt/report.py",
        "import time as _time  # noqa\n",
        "Pure code imports nothing that does I/O",
        id="report-building-reads-the-clock",
    ),
    pytest.param(
        "probe/prober.py",
        "from mta_sts_policyd.config import settings as _settings  # noqa\n",
        "Only service and cli read the configuration",
        id="probe-reads-the-config",
    ),
    pytest.param(
        "cli/probe.py",
        "from mta_sts_policyd.service.daemon import Daemon as _Daemon  # noqa\n",
        "The CLI builds nothing itself",
        id="cli-reaches-into-the-daemon",
    ),
    pytest.param(
        "tlsrpt/shadow/label.py",
        "from mta_sts_policyd.tlsrpt.shadow import checker as _checker  # noqa\n",
        "No import cycles",
        id="shadow-labels-import-the-shadow-that-imports-them",
    ),
]


@pytest.mark.parametrize(("module", "line", "contract"), VIOLATIONS)
def test_a_planted_violation_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    package = tmp_path / "daemon" / "mta_sts_policyd"
    shutil.copytree(
        REPO_ROOT / "daemon" / "mta_sts_policyd",
        package,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    target = package / module
    target.write_text(target.read_text() + "\n" + line)
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
