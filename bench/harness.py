"""Shared plumbing of the scenarios: the environment, daemon start-up, the load generator."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemons import (
    Daemon,
    pinned,
    process_cpu_seconds,
    process_cpu_split,
    start_ours,
    start_theirs,
    wait_answering,
    write_ours_config,
    write_theirs_config,
)
from fixtures import Fixtures

NAMES = ("ours", "theirs")
LOAD_FIELDS = (
    "qps",
    "p50_us",
    "p99_us",
    "cpu_us_per_answer",
    "user_us_per_answer",
    "system_us_per_answer",
)
IDLE_KEY = "[192.0.2.1]"
"""An address literal: both daemons answer NOTFOUND without any lookup."""


@dataclass
class Env:
    workdir: Path
    fixtures: Fixtures
    loadgen: Path
    venv: Path
    quick: bool
    server_cpus: str | None = None
    client_cpus: str | None = None
    """None: no pinning. On small VMs a wake-up across CPUs costs more than sharing one."""
    rtt_ms: float = 40.0
    """Round-trip time of the rtt scenario's delayed DNS and HTTPS."""
    profile_dir: Path | None = None
    """When set, py-spy samples our daemon in every scenario and writes one file per start."""

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def start_daemon(
    env: Env,
    name: str,
    *,
    store: Path | None = None,
    ours: dict[str, Any] | None = None,
    theirs: dict[str, Any] | None = None,
    uvloop: bool | None = None,
) -> Daemon:
    """A fresh daemon (ours: a new state dir, seeded from `store` if given), answering.

    `uvloop` None: each daemon's default set-up in these benchmarks (ours on uvloop, the
    incumbent on plain asyncio, as published before); True/False forces the event loop.
    """
    if name == "ours":
        state = env.workdir / f"state-{time.monotonic_ns()}"
        state.mkdir()
        if store is not None:
            shutil.copy(store, state / "policies.sqlite")
        config = write_ours_config(env.workdir, env.fixtures.ca_pem, state, **(ours or {}))
        daemon = start_ours(env.workdir, config, env.server_cpus, uvloop is not False)
    else:
        config = write_theirs_config(env.workdir, **(theirs or {}))
        daemon = start_theirs(
            env.workdir, env.venv, config, env.fixtures.ca_pem, env.server_cpus, uvloop is True
        )
    daemon.extra["ready_seconds"] = wait_answering(daemon, IDLE_KEY)
    if env.profile_dir is not None and name == "ours":
        env.profile_dir.mkdir(parents=True, exist_ok=True)
        daemon.attach_profiler(env.profile_dir / f"ours-{time.strftime('%H%M%S')}.txt")
    return daemon


def keys_file(env: Env, tag: str, domains: Sequence[str]) -> Path:
    path = env.workdir / f"keys-{tag}.txt"
    path.write_text("\n".join(domains) + "\n")
    return path


def run_load(
    env: Env, daemon: Daemon, keys: Path, conns: int, mode: str, seconds: float = 0.0
) -> dict[str, Any]:
    """One load generator run against `daemon`, with the server's CPU over exactly that run."""
    argv = [str(env.loadgen), "client", "127.0.0.1", str(daemon.port), str(conns), str(keys)]
    argv = pinned(env.client_cpus, [*argv, mode, str(seconds)])
    fixture_pids = env.fixtures.pids()
    user0, sys0 = process_cpu_split(daemon.pid)
    fixtures_before = [process_cpu_seconds(pid) for pid in fixture_pids]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 600)
    user1, sys1 = process_cpu_split(daemon.pid)
    cpu = (user1 - user0) + (sys1 - sys0)
    fixtures_each = [
        process_cpu_seconds(p) - b for p, b in zip(fixture_pids, fixtures_before, strict=True)
    ]
    fixtures_cpu = sum(fixtures_each)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr.strip()} / {daemon.log_tail()}")
    result: dict[str, Any] = json.loads(out.stdout)
    result["server_cpu_s"] = round(cpu, 3)
    answers = result["answers"] or 1
    result["cpu_us_per_answer"] = round(cpu / answers * 1e6, 2)
    result["user_us_per_answer"] = round((user1 - user0) / answers * 1e6, 2)
    result["system_us_per_answer"] = round((sys1 - sys0) / answers * 1e6, 2)
    result["fixtures_cpu_us_per_answer"] = round(fixtures_cpu / answers * 1e6, 2)
    result["fixtures_cpu_us_per_answer_https_dns_relay"] = [
        round(c / answers * 1e6) for c in fixtures_each
    ]
    return result


def median_of(runs: list[dict[str, Any]], fields: Sequence[str]) -> dict[str, Any]:
    return {f: round(statistics.median(r[f] for r in runs), 2) for f in fields}


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def domains(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}.bench.test" for i in range(count)]
