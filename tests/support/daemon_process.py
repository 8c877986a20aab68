"""The real daemon as a subprocess: `mta-sts-policyd serve -c config.toml` on loopback.

`DaemonProcess` writes a config.toml pointing at the loopback DNS/HTTPS test servers (short
timeouts), starts the daemon on a free port with a temporary state directory, waits until it
logs `event=ready`, and stops it with a signal. Its stderr (the daemon's log) goes to a file so
tests can wait for and assert on log events. Paths stay short on purpose: unix socket paths
(the control socket, `unix:` listeners) are limited to 107 bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from mta_sts_policyd.config.toml_schema import toml_value
from mta_sts_policyd.postfix.client import SocketmapClient
from mta_sts_policyd.state_files import POLICY_STORE_NAME

from .ports import free_port

DAEMON_SRC = Path(__file__).resolve().parents[2] / "daemon"
COMMAND = (sys.executable, "-m", "mta_sts_policyd.cli.main")
"""The console script's code, run by this interpreter (no dependence on PATH)."""

Sections = Mapping[str, Mapping[str, Any]]


def toml_text(sections: Sections) -> str:
    """A small TOML writer for test configs (tables of scalars and lists; dotted sub-tables)."""
    lines: list[str] = []
    for table, values in sections.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def merge(base: Sections, extra: Sections) -> dict[str, dict[str, Any]]:
    merged = {table: dict(values) for table, values in base.items()}
    for table, values in extra.items():
        merged.setdefault(table, {}).update(values)
    return merged


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for daemon/CLI subprocesses: importable package, no systemd leftovers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_SOCKET"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(DAEMON_SRC), env.get("PYTHONPATH")]))
    env.pop("JOURNAL_STREAM", None)
    env.update(extra or {})
    return env


class DaemonError(AssertionError):
    """The daemon did not start, stop or log as expected (the message carries its log)."""


class DaemonProcess:
    """One daemon under test. Use as a context manager; `start()` may be called again later."""

    def __init__(
        self,
        nameserver: str,
        ca_file: str,
        https_port: int,
        settings: Sections | None = None,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="mtasts-"))
        self.state_dir = self.workdir / "state"
        self.config_path = self.workdir / "config.toml"
        self.log_path = self.workdir / "daemon.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0
        self.settings: dict[str, dict[str, Any]] = merge(
            {
                "server": {"listen": [self.address], "sts_attributes": False},
                "discovery": {
                    "nameservers": [nameserver],
                    "dns_timeout": 1.0,
                    "fetch_timeout": 2.0,
                    "ca_file": ca_file,
                    "https_port": https_port,
                },
                "cache": {"state_dir": str(self.state_dir), "cold_wait": 2.0},
                "probe": {"enabled": False},
            },
            settings or {},
        )
        self.write_config()

    @classmethod
    def for_servers(cls, dns: Any, https: Any, settings: Sections | None = None) -> DaemonProcess:
        """Wired to a support.dns_server.DnsServer and a support.https_server.HttpsServer."""
        return cls(dns.nameserver, https.ca_pem_path, https.port, settings)

    # ----- configuration -------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def control_path(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def store_path(self) -> Path:
        return self.state_dir / POLICY_STORE_NAME

    def write_config(self, **tables: Mapping[str, Any]) -> None:
        """Merge `tables` (e.g. server={"sts_attributes": True}) into the settings; write them."""
        self.settings = merge(self.settings, tables)
        self.config_path.write_text(toml_text(self.settings))

    # ----- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(
        self,
        *extra_args: str,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
        pass_fds: Sequence[int] = (),
        wait: bool = True,
    ) -> None:
        """Run `[wrapper...] python -m mta_sts_policyd.cli.main serve -c CONFIG [extra_args]`."""
        if self.proc is not None and self.proc.poll() is None:
            raise DaemonError("the daemon is already running")
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()/stop()
        argv = [*wrapper, *COMMAND, "serve", "-c", str(self.config_path), *extra_args]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=subprocess_env(env),
            pass_fds=tuple(pass_fds),
        )
        if wait:
            self.wait_for_log("event=ready", timeout=20)

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the daemon and wait for it to exit; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise DaemonError(f"no exit within {timeout}s of {sig.name}\n{self.log()}") from None
        self._close_log()
        return code

    def close(self) -> None:
        # pytest shows captured output of failing tests only: the daemon's log is the evidence.
        print(f"--- daemon log ({self.log_path}) ---\n{self.log(since_start=False)}")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._close_log()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ----- observation ---------------------------------------------------------------------
    def log(self, since_start: bool = True) -> str:
        """The daemon's log (stderr), from the last start on unless `since_start` is False."""
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return data[self._log_start if since_start else 0 :].decode("utf-8", "replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> re.Match[str]:
        """Wait until the log since the last start matches `pattern` `count` times."""
        deadline = time.monotonic() + timeout
        while True:
            matches = list(re.finditer(pattern, self.log()))
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc is not None and self.proc.poll() is not None:
                raise DaemonError(
                    f"daemon exited ({self.proc.returncode}) before logging {pattern!r}\n"
                    + self.log()
                )
            if time.monotonic() > deadline:
                raise DaemonError(f"no {pattern!r} in the log within {timeout}s\n{self.log()}")
            time.sleep(0.02)

    # ----- clients -------------------------------------------------------------------------
    def query(self, key: str, address: str | None = None) -> bytes:
        """One socketmap request over a fresh connection."""
        with SocketmapClient(address or self.address, timeout=10) as client:
            return client.query(key)

    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI as a process (`mta-sts-policyd ARGS`); no `-c` is added."""
        return subprocess.run(
            [*COMMAND, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=subprocess_env(env),
            check=False,
        )


POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"


def postfix_config_dir(directory: Path) -> Path:
    """A minimal Postfix config dir for `postmap -c DIR` (postmap needs a main.cf)."""
    directory.mkdir(parents=True, exist_ok=True)
    main_cf = directory / "main.cf"
    main_cf.write_text(
        "myhostname = localhost.localdomain\nmydomain = localdomain\ncompatibility_level = 3.6\n"
    )
    # Postfix waits until a just-written main.cf is a second or more old; backdate it.
    old = main_cf.stat().st_mtime - 60
    os.utime(main_cf, (old, old))
    return directory


def postmap(config_dir: Path, table: str, key: str) -> tuple[int, str]:
    """`postmap -c DIR -q KEY TABLE` -> (exit code, stdout + stderr)."""
    out = subprocess.run(
        [POSTMAP, "-c", str(config_dir), "-q", key, table],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.returncode, out.stdout + out.stderr


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
