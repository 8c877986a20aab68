"""House rules as tests: ruff (lint + format) on the tree, mypy --strict on package and bench."""

from __future__ import annotations

import subprocess
import sys

from support import REPO_ROOT

ROOT = REPO_ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_lint_is_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_package() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_benchmarks() -> None:
    """bench/ is code the team runs to decide designs: typed like the package."""
    result = _run("mypy", "--strict", "bench")
    assert result.returncode == 0, result.stdout + result.stderr
