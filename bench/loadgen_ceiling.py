"""The load generator's own ceiling: the same runs against the trivial C echo socketmap server."""

from __future__ import annotations

from typing import Any

from daemons import spawn_ready
from harness import LOAD_FIELDS, Env, domains, keys_file, median_of, run_load

ECHO_PORT = 8499


def ceiling(env: Env) -> dict[str, Any]:
    argv = [str(env.loadgen), "echo", "127.0.0.1", str(ECHO_PORT)]
    echo = spawn_ready("echo", argv, ECHO_PORT, env.workdir, env.server_cpus)
    keys = keys_file(env, "ceiling", domains("d", 1000))
    seconds, runs = (1.5, 2) if env.quick else (5.0, 3)
    out: dict[str, Any] = {}
    try:
        for conns in (1, 20):
            samples = [run_load(env, echo, keys, conns, "time", seconds) for _ in range(runs)]
            out[f"c{conns}"] = median_of(samples, LOAD_FIELDS)
            env.log(f"loadgen ceiling c={conns}: {out[f'c{conns}']}")
    finally:
        echo.stop()
    return out
