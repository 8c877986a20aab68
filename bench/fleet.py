"""Fleet mode (issue 16): N of our daemons sharing one redis-server, in the benchmark namespace.

Three measurements, ours only (the incumbent has no fleet-wide single flight to compare):

1. HTTPS fetches per domain with N = 1, 2, 4, 8 daemons: each of K never-seen domains is asked
   by 30 connections per daemon at the same moment (loadgen `each` mode, all daemons at
   once); the policy host counts the fetches it serves. The target is 1 per domain whatever N.
2. Answers and latency during a Redis outage: 4 daemons (2 with --quick) know 200 enforce
   domains; each gets a load generator (20 connections, time mode) for the same window, once
   with Redis up, once with Redis killed (`kill -9`) and once frozen (SIGSTOP) from the start
   of the window. Every answer must be `OK`; p50/p99 and answers/s are reported per case.
3. Redis memory with 100k shared domains: 100k policies written through the shared tier's own
   code path (`fleet/shared_policies.py`, the entries a fetch writes), then `INFO memory`
   `used_memory` minus the empty server's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from daemons import Daemon, _toml, spawn, wait_answering
from harness import IDLE_KEY, Env, domains, keys_file, median_of, wait_until

REDIS_PORT = 6390
FIRST_PORT = 8470
SIZES = (1, 2, 4, 8)
_MAIN = "import sys; from mta_sts_policyd.cli.main import main; sys.exit(main(sys.argv[1:]))"


class Redis:
    """One redis-server on loopback, no persistence (as the fleet tests run it)."""

    def __init__(self, workdir: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError(
                "the fleet scenario needs redis-server (apt-get install redis-server)"
            )
        self.dir = workdir / "redis"
        self.dir.mkdir(exist_ok=True)
        self.argv = [
            server,
            "--port",
            str(REDIS_PORT),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "log"),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{REDIS_PORT}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL)
        if not wait_until(lambda: self.command("PING") == "PONG", 10, 0.05):
            raise RuntimeError("redis-server did not start")

    def command(self, *args: str) -> str:
        cli = shutil.which("redis-cli") or "redis-cli"
        out = subprocess.run(
            [cli, "-p", str(REDIS_PORT), *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()

    def used_memory(self) -> int:
        for line in self.command("INFO", "memory").splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        raise RuntimeError("no used_memory in INFO memory")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.kill()


def start_node(env: Env, redis: Redis, n: int, **cache: Any) -> Daemon:
    """Our daemon number `n` of the fleet: own port and state directory, shared Redis."""
    state = env.workdir / f"fleet-state-{n}-{time.monotonic_ns()}"
    state.mkdir()
    port = FIRST_PORT + n
    sections: dict[str, dict[str, Any]] = {
        "server": {"listen": [f"127.0.0.1:{port}"], "sts_attributes": False},
        "discovery": {
            "nameservers": ["127.0.0.1:53"],
            "ca_file": env.fixtures.ca_pem,
            "https_port": 443,
        },
        "cache": {"state_dir": str(state), "cold_wait": 10.0, **cache},
        "fleet": {
            "redis": redis.url,
            "node_name": f"node{n}",
            "heartbeat_interval": 1.0,
            "breaker_reset": 2.0,
        },
    }
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in body.items()) + "\n"
        for name, body in sections.items()
    )
    config = env.workdir / f"fleet-{n}.toml"
    config.write_text(text)
    daemon = spawn(f"fleet{n}", [sys.executable, "-c", _MAIN, "serve", "-c", str(config)], port,
                   env.workdir, env.server_cpus, {})  # fmt: skip
    daemon.extra["ready_seconds"] = wait_answering(daemon, IDLE_KEY)
    return daemon


def start_fleet(env: Env, redis: Redis, count: int, **cache: Any) -> list[Daemon]:
    return [start_node(env, redis, n, **cache) for n in range(count)]


def stop_fleet(nodes: list[Daemon]) -> None:
    for node in nodes:
        node.stop()


def load_all(
    env: Env, nodes: list[Daemon], keys: Path, conns: int, mode: str, seconds: float = 0.0
) -> list[dict[str, Any]]:
    """One load generator per node, all started together; their JSON results."""
    procs = [
        subprocess.Popen(
            [
                str(env.loadgen),
                "client",
                "127.0.0.1",
                str(node.port),
                str(conns),
                str(keys),
                mode,
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in nodes
    ]
    results = []
    for proc, node in zip(procs, nodes, strict=True):
        out, err = proc.communicate(timeout=seconds + 600)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed: {err.strip()} / {node.log_tail()}")
        results.append(json.loads(out))
    return results


def fetches_per_domain(env: Env, redis: Redis, count: int) -> dict[str, Any]:
    """1. K never-seen domains, 30 connections per daemon asking each at the same moment."""
    per_domain = 5 if env.quick else 20
    redis.command("FLUSHALL")
    nodes = start_fleet(env, redis, count)
    try:
        env.fixtures.reset()
        names = domains(f"fleet{count}-", per_domain)
        env.fixtures.prepare(names)
        asked = ok = 0
        for name in names:
            keys = keys_file(env, "fleet-one", [name])
            for result in load_all(env, nodes, keys, 30, "each"):
                asked += result["answers"]
                ok += result["ok"]
        time.sleep(0.5)
        fetched = env.fixtures.stats()["https_requests"]
    finally:
        stop_fleet(nodes)
    row = {
        "nodes": count,
        "domains": per_domain,
        "lookups": asked,
        "ok": ok,
        "https_fetches": fetched,
        "fetches_per_domain": round(fetched / per_domain, 2),
    }
    env.log(f"fleet single flight, {count} nodes: {row}")
    return row


def outage(env: Env, redis: Redis) -> dict[str, Any]:
    """2. Answers and latency with Redis up, killed and frozen, under the same load."""
    count, seconds = (2, 6.0) if env.quick else (4, 20.0)
    known = domains("fleetknown", 200)
    redis.command("FLUSHALL")
    nodes = start_fleet(env, redis, count)
    out: dict[str, Any] = {"nodes": count, "domains": len(known), "seconds": seconds}
    try:
        env.fixtures.prepare(known)
        keys = keys_file(env, "fleet-known", known)
        for result in load_all(env, nodes, keys, 20, "once"):
            if result["ok"] != len(known):
                raise RuntimeError(f"fleet warm-up answered {result['ok']}/{len(known)} OK")
        env.fixtures.reset()
        for case in ("up", "killed", "frozen"):
            if case == "killed":
                redis.kill()
            elif case == "frozen":
                redis.freeze()
            results = load_all(env, nodes, keys, 20, "time", seconds)
            answers = sum(r["answers"] for r in results)
            row = {
                **median_of(results, ("p50_us", "p99_us")),
                "worst_p99_us": max(r["p99_us"] for r in results),
                "max_us": max(r["max_us"] for r in results),
                "answers": answers,
                "ok": sum(r["ok"] for r in results),
                "answers_per_s": round(answers / seconds, 1),
            }
            if case == "killed":
                redis.start()
            elif case == "frozen":
                redis.thaw()
            time.sleep(3.0)  # breakers close (trial call after breaker_reset)
            out[case] = row
            env.log(f"fleet outage, Redis {case}: {row}")
        out["refetches_after_outages"] = env.fixtures.stats()["https_requests"]
    finally:
        stop_fleet(nodes)
    return out


def redis_memory(env: Env, redis: Redis) -> dict[str, Any]:
    """3. used_memory with 100k shared policies written through the shared tier's code."""
    count = 10_000 if env.quick else 100_000
    redis.command("FLUSHALL")
    empty = redis.used_memory()
    helper = Path(__file__).resolve().parent / "fleet_fill.py"
    started = time.monotonic()
    filled = subprocess.run([sys.executable, str(helper), redis.url, str(count)], check=False)
    if filled.returncode != 0:
        env.log("fleet Redis memory: bench/fleet_fill.py failed")
        return {}
    seconds = time.monotonic() - started
    used = redis.used_memory()
    keys = int(redis.command("DBSIZE"))
    row = {
        "domains": count,
        "keys": keys,
        "used_memory_empty": empty,
        "used_memory": used,
        "bytes_per_domain": round((used - empty) / count, 1),
        "write_seconds": round(seconds, 1),
        "used_memory_mb": round((used - empty) / 1024 / 1024, 1),
    }
    env.log(f"fleet Redis memory: {row}")
    return row


def fleet(env: Env) -> dict[str, Any]:
    redis = Redis(env.workdir)
    try:
        sizes = (1, 2, 4) if env.quick else SIZES
        out: dict[str, Any] = {"single_flight": [fetches_per_domain(env, redis, n) for n in sizes]}
        out["outage"] = outage(env, redis)
        out["memory"] = redis_memory(env, redis)
        return out
    finally:
        redis.stop()


def markdown(f: dict[str, Any]) -> list[str]:
    """The fleet's own table (ours only) for report.markdown."""
    lines = ["", "Fleet mode (ours only; bench/fleet.py):", "",
             "| fleet metric | value | target | met |", "|---|---:|---|---|"]  # fmt: skip
    for row in f.get("single_flight", []):
        ok = row["fetches_per_domain"] == 1 and row["ok"] == row["lookups"]
        lines.append(
            f"| {row['nodes']} node(s), {row['domains']} new domains, 30 concurrent first lookups"
            f" per node each ({row['lookups']:,} lookups, {row['ok']:,} OK): HTTPS fetches per"
            f" domain | {row['fetches_per_domain']} | 1 | {'yes' if ok else '**no**'} |"
        )
    o = f.get("outage")
    if o:
        for case in ("up", "killed", "frozen"):
            c = o[case]
            all_ok = c["ok"] == c["answers"]
            lines.append(
                f"| {o['nodes']} nodes, {o['domains']} known domains, 20 conn each, Redis {case}"
                f" for {o['seconds']:.0f} s: answers/s, OK of answers, p50 / p99 (worst node) /"
                f" max µs | {c['answers_per_s']:,.0f}, {c['ok']:,} of {c['answers']:,},"
                f" {c['p50_us']:.0f} / {c['p99_us']:.0f} ({c['worst_p99_us']:.0f}) /"
                f" {c['max_us']:,.0f} | all OK | {'yes' if all_ok else '**no**'} |"
            )
        lines.append(f"| HTTPS refetches of known domains across the outages |"
                     f" {o['refetches_after_outages']} | 0 |"
                     f" {'yes' if o['refetches_after_outages'] == 0 else '**no**'} |")  # fmt: skip
    m = f.get("memory")
    if m:
        lines.append(
            f"| Redis used_memory with {m['domains']:,} shared policies ({m['keys']:,} keys):"
            f" MB (bytes per domain) | {m['used_memory_mb']} ({m['bytes_per_domain']:,.0f}) | | |"
        )
    return lines
