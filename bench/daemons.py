"""Start, observe and stop the two daemons under test (ours and postfix-mta-sts-resolver).

Both run as child processes pinned to the same CPU, with their stderr in the work directory.
Observation comes from the kernel's accounting of the server process itself: utime+stime in
/proc/PID/stat (all threads) and VmRSS in /proc/PID/status.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mta_sts_policyd.postfix.client import SocketmapClient

CLK_TCK = os.sysconf("SC_CLK_TCK")
_OURS_MAIN = "import sys; from mta_sts_policyd.cli.main import main; sys.exit(main(sys.argv[1:]))"
_NO_UVLOOP = "import sys; sys.modules['uvloop'] = None; "
"""Prefix for `_OURS_MAIN`: uvloop's import fails, so `serve` runs on plain asyncio."""
OURS_PORT = 8463
THEIRS_PORT = 8461


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, all its threads, from /proc/PID/stat."""
    user, system = process_cpu_split(pid)
    return user + system


def process_cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) in seconds: user space (Python, event loop) vs kernel (system calls)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


@dataclass
class Daemon:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    started: float
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)
    profiler: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process, all threads (the kernel's own accounting)."""
        return process_cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.process.poll() is None

    def attach_profiler(self, output: Path) -> None:
        """py-spy samples this process until stop() (raw collapsed stacks, 250 Hz, native off)."""
        beside = Path(sys.executable).parent / "py-spy"  # bench/.venv-ours has it
        py_spy = str(beside) if beside.exists() else shutil.which("py-spy")
        if py_spy is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        argv = [py_spy, "record", "--pid", str(self.pid), "--rate", "250", "--format", "raw"]
        self.profiler = subprocess.Popen(
            [*argv, "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)  # attached before the load starts

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self.profiler.wait(30)
            self.profiler = None
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def write_ours_config(workdir: Path, ca_pem: str, state_dir: Path, **cache: Any) -> Path:
    """Defaults, except what the fixture world needs (addresses, CA) and `cache` overrides."""
    sections: dict[str, dict[str, Any]] = {
        "server": {"listen": [f"127.0.0.1:{OURS_PORT}"], "sts_attributes": False},
        "discovery": {"nameservers": ["127.0.0.1:53"], "ca_file": ca_pem, "https_port": 443},
        "cache": {"state_dir": str(state_dir), **cache},
    }
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in body.items()) + "\n"
        for name, body in sections.items()
    )
    path = workdir / "ours.toml"
    path.write_text(text)
    return path


def write_theirs_config(workdir: Path, **overrides: Any) -> Path:
    """YAML for postfix-mta-sts-resolver: its own port, defaults otherwise (plus `overrides`)."""
    lines = ["host: 127.0.0.1", f"port: {THEIRS_PORT}"]
    if "cache_size" in overrides:
        lines += [
            "cache:",
            "  type: internal",
            "  options:",
            f"    cache_size: {overrides['cache_size']}",
        ]
    if "proactive_interval" in overrides:
        lines += [
            "proactive_policy_fetching:",
            "  enabled: true",
            f"  interval: {overrides['proactive_interval']}",
            f"  grace_ratio: {overrides.get('proactive_grace_ratio', 2.0)}",
        ]
    path = workdir / "theirs.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def spawn(
    name: str, argv: list[str], port: int, workdir: Path, cpus: str | None, env: dict[str, str]
) -> Daemon:
    log = workdir / f"{name}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            pinned(cpus, argv),
            stdout=sink,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
    return Daemon(name, port, process, time.monotonic(), log)


def spawn_ready(name: str, argv: list[str], port: int, workdir: Path, cpus: str | None) -> Daemon:
    """A helper server (the C echo, the event-loop floor) that prints "ready" once listening."""
    process = subprocess.Popen(pinned(cpus, argv), stdout=subprocess.PIPE)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"{name} did not start: {' '.join(argv)}")
    return Daemon(name, port, process, time.monotonic(), workdir / f"{name}.log")


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def start_ours(workdir: Path, config: Path, cpus: str | None, uvloop: bool = True) -> Daemon:
    main = _OURS_MAIN if uvloop else _NO_UVLOOP + _OURS_MAIN
    argv = [sys.executable, "-c", main, "serve", "-c", str(config)]
    return spawn("ours", argv, OURS_PORT, workdir, cpus, {})


def start_theirs(
    workdir: Path, venv: Path, config: Path, ca_pem: str, cpus: str | None, uvloop: bool = False
) -> Daemon:
    """The incumbent; on plain asyncio unless `uvloop` (its venv has its `uvloop` extra)."""
    argv = [str(venv / "bin" / "mta-sts-daemon"), "-c", str(config)]
    if not uvloop:
        argv.append("--disable-uvloop")
    return spawn("theirs", argv, THEIRS_PORT, workdir, cpus, {"SSL_CERT_FILE": ca_pem})


def wait_answering(daemon: Daemon, key: str, timeout: float = 60.0, expect: bytes = b"") -> float:
    """Seconds from spawn until `key` is answered (starting with `expect`, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"{daemon.name} exited: {daemon.log_tail()}")
        try:
            with SocketmapClient(daemon.address, timeout=10) as client:
                reply = client.query(key)
        except OSError:
            time.sleep(0.005)
            continue
        if reply.startswith(expect):
            return time.monotonic() - daemon.started
        time.sleep(0.005)
    raise RuntimeError(f"{daemon.name} did not answer {key!r} in {timeout}s: {daemon.log_tail()}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
