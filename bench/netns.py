"""Run the benchmark inside a private network + mount namespace (root only).

Inside, only loopback exists, so the fixtures can own ports 53 and 443 and the incumbent (which
reads /etc/resolv.conf and always fetches from port 443) reaches nothing but them. The resolver
configuration is a private bind mount that disappears with the namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

MARKER = "MTA_STS_BENCH_NETNS"


def reexec_in_namespace() -> None:
    """Replace this process by itself inside fresh namespaces (returns only when already inside)."""
    if os.environ.get(MARKER) == "1":
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.exit("bench: needs root and unshare(1) to create a private network namespace")
    os.environ[MARKER] = "1"
    argv = ["unshare", "--net", "--mount", "--propagation", "private", sys.executable, *sys.argv]
    os.execvp("unshare", argv)


def setup_namespace(workdir: Path) -> None:
    """Bring loopback up and point the system resolver at the fixture DNS server."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = workdir / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)
