"""Real redis-server (and redis-sentinel) processes on loopback for the fleet tests.

Each server gets its own directory and port, no persistence, and can be killed (`kill -9`),
frozen (SIGSTOP) and thawed, or restarted on the same port, which is what the fleet's outage
tests need. A Sentinel set-up is a master, a replica and one sentinel (quorum 1).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from support.ports import free_port

REDIS_SERVER = shutil.which("redis-server")
REDIS_SENTINEL = shutil.which("redis-sentinel")


def _wait_ping(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"redis on port {port} did not answer PING")


class RedisServer:
    """One redis-server on 127.0.0.1 (and a unix socket in its directory)."""

    def __init__(self, root: Path, *, port: int | None = None, replica_of: int | None = None):
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server not installed: .ci/setup installs it")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.unix_socket = root / "redis.sock"
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unix_socket}"

    def start(self) -> None:
        args = [
            str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1",
            "--unixsocket", str(self.unix_socket), "--unixsocketperm", "700",
            "--dir", str(self.root), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--protected-mode", "no",
            "--logfile", str(self.root / "redis.log"),
        ]  # fmt: skip
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ping(self.port)

    def kill(self) -> None:
        """`kill -9`: the server is gone, connections reset."""
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Back on the same port, empty (no persistence)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()


class SentinelSetup:
    """A master, a replica of it and one sentinel watching them (quorum 1, fast failover)."""

    SERVICE = "fleet"

    def __init__(self, root: Path) -> None:
        if REDIS_SENTINEL is None:
            raise RuntimeError("redis-sentinel not installed: .ci/setup installs it")
        self.master = RedisServer(root / "master")
        self.replica = RedisServer(root / "replica", replica_of=self.master.port)
        self.sentinel_port = free_port()
        conf = root / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\nprotected-mode no\n"
            f"dir {root}\nlogfile {root / 'sentinel.log'}\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
            f"sentinel failover-timeout {self.SERVICE} 5000\n"
            f"sentinel parallel-syncs {self.SERVICE} 1\n"
        )
        self.sentinel = subprocess.Popen(
            [str(REDIS_SENTINEL), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ping(self.sentinel_port)

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{self.sentinel_port}"]

    def stop(self) -> None:
        if self.sentinel.poll() is None:
            self.sentinel.kill()
            self.sentinel.wait()
        self.replica.stop()
        self.master.stop()
