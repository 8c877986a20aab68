"""Real file-system faults for the storage tests: a small tmpfs that can be filled and made
read-only, and running a command as an unprivileged user.

Mounting needs root (CI runs as root); where it is impossible the tests skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

NOBODY = 65534
SETPRIV = shutil.which("setpriv")


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


class SmallFs:
    """A tmpfs of `size` mounted at `path` (created if missing) for one test."""

    def __init__(self, path: Path, size: str = "2m") -> None:
        self.path = path
        self.size = size
        self.filler = path / ".filler"

    def mount(self) -> None:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        self.path.mkdir(parents=True, exist_ok=True)
        done = _mount("-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path))
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    def unmount(self) -> None:
        """Lazily when still busy (a failed test may leave a file open): never left mounted."""
        if subprocess.run(["umount", str(self.path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)

    def fill(self) -> None:
        """Write until ENOSPC: from now on nothing on this file system gets a new block."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * 65536
            while True:
                try:
                    os.write(fd, chunk)
                except OSError:
                    if len(chunk) == 1:
                        break
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self, on: bool = True) -> None:
        done = _mount("-o", f"remount,{'ro' if on else 'rw'}", str(self.path))
        assert done.returncode == 0, done.stderr


@contextlib.contextmanager
def small_fs(path: Path, size: str = "2m") -> Iterator[SmallFs]:
    fs = SmallFs(path, size)
    fs.mount()
    try:
        yield fs
    finally:
        fs.unmount()


def as_nobody(env: Mapping[str, str]) -> list[str]:
    """A command prefix that runs the rest as uid/gid 65534. Skips where that is impossible:
    not root, no setpriv, or a checkout or interpreter that user cannot read (e.g. under a
    0700 home directory), so a failure means the daemon's answer, not the test machine's."""
    if os.geteuid() != 0 or SETPRIV is None:
        pytest.skip("running as another user needs root and setpriv")
    prefix = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import mta_sts_policyd.cli.main"],
        capture_output=True,
        env=dict(env),
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"uid {NOBODY} cannot run this checkout's Python here")
    return prefix
