"""The five scenarios of issue 4, each run for both daemons with the same fixtures and load."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from daemons import Daemon, spawn_ready
from harness import (
    LOAD_FIELDS,
    NAMES,
    Env,
    domains,
    keys_file,
    median_of,
    run_load,
    start_daemon,
    wait_until,
)
from loadgen_ceiling import ceiling
from store import make_store

LOOP_FLOOR_PORT = 8498


def cached(env: Env) -> dict[str, Any]:
    """1. Answers from the cache, 1 and 20 connections, sequential requests per connection."""
    count, seconds, runs = (200, 2.0, 2) if env.quick else (1000, 8.0, 5)
    keys = keys_file(env, "cached", domains("d", count))
    out: dict[str, Any] = {"domains": count, "seconds_per_run": seconds, "runs": runs}
    for name in NAMES:
        daemon = start_daemon(env, name)
        try:
            fill = run_load(env, daemon, keys, 20, "once")
            if fill["ok"] != count:
                raise RuntimeError(f"{name}: cache fill answered {fill['ok']}/{count} OK")
            for conns in (1, 20):
                run_load(env, daemon, keys, conns, "time", 1.0)  # warm-up
                samples = [run_load(env, daemon, keys, conns, "time", seconds) for _ in range(runs)]
                bad = [s for s in samples if s["ok"] != s["answers"]]
                if bad:
                    raise RuntimeError(f"{name}: non-OK answers in cached load: {bad[0]}")
                out[f"{name}_c{conns}"] = median_of(samples, LOAD_FIELDS)
                out[f"{name}_c{conns}_runs"] = samples
                env.log(f"cached {name} c={conns}: {out[f'{name}_c{conns}']}")
        finally:
            daemon.stop()
    return out


def cold(env: Env) -> dict[str, Any]:
    """2. 200 distinct never-seen domains over 20 connections: time to answer each."""
    runs = 2 if env.quick else 5
    out: dict[str, Any] = {"domains": 200, "connections": 20, "runs": runs}
    for name in NAMES:
        daemon = start_daemon(env, name)
        try:
            samples = []
            for run in range(runs):
                names = domains(f"cold{run}-{name}-", 200)
                env.fixtures.prepare(names)  # certificates minted outside the measured run
                keys = keys_file(env, "cold", names)
                sample = run_load(env, daemon, keys, 20, "once")
                if sample["ok"] != 200:
                    raise RuntimeError(f"{name}: cold run answered {sample['ok']}/200 OK")
                samples.append(sample)
            fields = (
                "p50_us",
                "p99_us",
                "max_us",
                "cpu_us_per_answer",
                "fixtures_cpu_us_per_answer",
                "user_us_per_answer",
                "system_us_per_answer",
            )
            out[name] = median_of(samples, fields)
            out[f"{name}_runs"] = samples
            env.log(f"cold {name}: {out[name]}")
        finally:
            daemon.stop()
    out["tls_floor"] = tls_floor(env, 200 * runs)
    env.log(f"cold floor: {out['tls_floor']}")
    return out


def tls_floor(env: Env, count: int) -> dict[str, Any]:
    """CPU of a bare TLS GET per new domain (tls_floor.py): what no Python daemon goes below."""
    names = domains("floor-", count)
    env.fixtures.prepare(names)
    script = Path(__file__).with_name("tls_floor.py")
    argv = [sys.executable, str(script), env.fixtures.ca_pem, "443", "20", *names]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def single_flight(env: Env) -> dict[str, Any]:
    """3. 30 connections ask for the same never-seen domain at once: HTTPS fetches made."""
    out: dict[str, Any] = {"connections": 30}
    for name in NAMES:
        daemon = start_daemon(env, name)
        try:
            runs = []
            for run in range(2 if env.quick else 3):
                env.fixtures.reset()
                env.fixtures.prepare([f"one{run}-{name}.bench.test"])
                keys = keys_file(env, "one", [f"one{run}-{name}.bench.test"])
                load = run_load(env, daemon, keys, 30, "each")
                time.sleep(0.5)
                fetches = env.fixtures.stats()["https_requests"]
                runs.append({"fetches": fetches, "ok": load["ok"], "p99_us": load["p99_us"]})
            out[name] = {
                "fetches": max(r["fetches"] for r in runs),
                "ok": min(r["ok"] for r in runs),
            }
            out[f"{name}_runs"] = runs
            env.log(f"single-flight {name}: {out[name]}")
        finally:
            daemon.stop()
    return out


def memory(env: Env) -> dict[str, Any]:
    """4. RSS idle and with 10k/100k cached policies; start-up with a 100k-entry store."""
    out: dict[str, Any] = {}
    for name in NAMES:
        daemon = start_daemon(env, name)
        time.sleep(1 if env.quick else 3)
        out[f"{name}_idle_mb"] = round(daemon.rss_mb(), 1)
        daemon.stop()
    filled = 300 if env.quick else 10_000
    out["filled_domains"] = filled
    for name in NAMES:
        daemon = start_daemon(env, name)
        try:
            keys = keys_file(env, "fill", domains("m", filled))
            started = time.monotonic()
            fill = run_load(env, daemon, keys, 20, "once")
            out[f"{name}_fill_seconds"] = round(time.monotonic() - started, 1)
            time.sleep(2)
            out[f"{name}_filled_mb"] = round(daemon.rss_mb(), 1)
            out[f"{name}_filled_ok"] = fill["ok"]
            env.log(f"memory {name} after {filled} fetched policies: {daemon.rss_mb():.1f} MB")
        finally:
            daemon.stop()
    out.update(store_startup(env))
    return out


def store_startup(env: Env) -> dict[str, Any]:
    """Ours only: start on a 100k-entry store, answer from it, RSS after touching every entry."""
    count = 100_000
    store = make_store(env.workdir / "store-100k.sqlite", domains("s", count))
    keys = keys_file(env, "store", domains("s", count))
    startups: list[float] = []
    out: dict[str, Any] = {}
    for run in range(1 if env.quick else 3):
        daemon = start_daemon(env, "ours", store=store)
        try:
            startups.append(daemon.extra["ready_seconds"])
            if run == 0:
                out["ours_100k_store_start_mb"] = round(daemon.rss_mb(), 1)
                load = run_load(env, daemon, keys, 20, "once")
                out["ours_100k_touched_ok"] = load["ok"]
                time.sleep(2)
                out["ours_100k_mb"] = round(daemon.rss_mb(), 1)
        finally:
            daemon.stop()
    out["ours_100k_startup_s"] = round(sorted(startups)[len(startups) // 2], 3)
    out["ours_100k_startup_runs"] = startups
    theirs = start_daemon(env, "theirs")
    out["theirs_startup_s"] = round(theirs.extra["ready_seconds"], 3)
    theirs.stop()
    env.log(f"store start-up: {out}")
    return out


def refresh(env: Env) -> dict[str, Any]:
    """5. Proactive refresh of 10k cached domains: duration and peak concurrency at the host."""
    count = 10_000
    out: dict[str, Any] = {"domains": count}
    keys = keys_file(env, "refresh", domains("r", count))
    settings: dict[str, dict[str, Any]] = {
        "ours": {"ours": {"refresh_interval": 30.0, "refresh_jitter": 0.0}},
        "theirs": {"theirs": {"proactive_interval": 120, "proactive_grace_ratio": 120.0}},
    }
    ticks = {"ours": 60.0, "theirs": 122.0}
    margins = {"ours": 30.0 + 6, "theirs": 6.0}  # ours: every entry older than refresh_interval
    for name in NAMES:
        daemon = start_daemon(env, name, **settings[name])
        try:
            fill = run_load(env, daemon, keys, 20, "once")
            env.log(f"refresh {name}: filled {fill['ok']} in {fill['seconds']:.1f}s")
            tick = ticks[name]
            while daemon.started + tick - time.monotonic() < margins[name]:
                tick += ticks[name] if name == "ours" else 120.0
            time.sleep(max(0.0, daemon.started + tick - 6 - time.monotonic()))
            run_load(env, daemon, keys, 20, "once")  # in use (ours skips unused entries)
            env.fixtures.bump_generation()
            env.fixtures.reset()
            cpu_before = daemon.cpu_seconds()
            wait_until(lambda: env.fixtures.stats()["https_requests"] >= count, tick + 300, 0.5)
            time.sleep(1)
            stats = env.fixtures.stats()
            out[name] = {
                "fetches": stats["https_requests"],
                "seconds": round(stats["last_request"] - stats["first_request"], 2),
                "peak_connections": stats["peak_connections"],
                "server_cpu_s": round(daemon.cpu_seconds() - cpu_before, 2),
            }
            env.log(f"refresh {name}: {out[name]}")
        finally:
            daemon.stop()
    return out


def rtt(env: Env) -> dict[str, Any]:
    """Cold answers with a real round-trip time: DNS replies and HTTPS chunks delayed.

    200 never-seen domains over 20 connections, as scenario 2, but every DNS reply waits one
    round trip and the policy host sits behind a relay that delays each chunk by half of it in
    each direction (and the TCP handshake by one). On loopback without delay a cold lookup is
    CPU-bound; here it is bound by round trips, which is what a first delivery waits for.
    Time to answer divided by the round-trip time is the number of round trips per cold answer.
    Then 50 domains without a policy: the DNS questions each costs (speculative work).
    """
    seconds = env.rtt_ms / 1000
    runs = 2 if env.quick else 3
    out: dict[str, Any] = {"rtt_ms": env.rtt_ms, "domains": 200, "connections": 20, "runs": runs}
    env.fixtures.set_rtt(seconds)
    try:
        for name in NAMES:
            daemon = start_daemon(env, name)
            try:
                samples = []
                for run in range(runs):
                    names = domains(f"rtt{run}-{name}-", 200)
                    env.fixtures.prepare(names)
                    env.fixtures.lateness()  # counted from here
                    sample = run_load(env, daemon, keys_file(env, "rtt", names), 20, "once")
                    if sample["ok"] != 200:
                        raise RuntimeError(f"{name}: rtt run answered {sample['ok']}/200 OK")
                    late = env.fixtures.lateness()
                    sample["late_dns_p99_ms"] = late["dns"].get("p99_ms", 0.0)
                    sample["late_https_p99_ms"] = late["https"].get("p99_ms", 0.0)
                    samples.append(sample)
                fields = ("p50_us", "p99_us", "max_us", "cpu_us_per_answer")
                summary = median_of(samples, (*fields, "late_dns_p99_ms", "late_https_p99_ms"))
                summary["p50_round_trips"] = round(summary["p50_us"] / 1000 / env.rtt_ms, 2)
                summary["p99_round_trips"] = round(summary["p99_us"] / 1000 / env.rtt_ms, 2)
                summary.update(_one_at_a_time(env, daemon, name))
                summary.update(_no_policy_cost(env, daemon, name))
                out[name] = summary
                out[f"{name}_runs"] = samples
                env.log(f"rtt {name}: {summary}")
            finally:
                daemon.stop()
    finally:
        env.fixtures.set_rtt(0.0)
    return out


def _one_at_a_time(env: Env, daemon: Any, name: str) -> dict[str, Any]:
    """20 cold domains on one connection: round trips without CPU queueing behind 19 others."""
    names = domains(f"seq-{name}-", 20)
    env.fixtures.prepare(names)
    sample = run_load(env, daemon, keys_file(env, "seq", names), 1, "once")
    if sample["ok"] != len(names):
        raise RuntimeError(f"{name}: sequential rtt run answered {sample['ok']}/20 OK")
    return {
        "sequential_p50_ms": round(sample["p50_us"] / 1000, 1),
        "sequential_p50_round_trips": round(sample["p50_us"] / 1000 / env.rtt_ms, 2),
    }


def _no_policy_cost(env: Env, daemon: Any, name: str) -> dict[str, Any]:
    """DNS questions per never-seen domain that has no `_mta-sts` record, and its p50."""
    count = 50
    names = domains(f"nopol-{name}-", count)
    before = env.fixtures.no_policy_queries()
    sample = run_load(env, daemon, keys_file(env, "nopol", names), 10, "once")
    time.sleep(2 * env.rtt_ms / 1000 + 0.5)  # questions still in flight are counted too
    if sample["notfound"] != count:
        raise RuntimeError(f"{name}: no-policy run answered {sample['notfound']}/{count} NOTFOUND")
    queries = env.fixtures.no_policy_queries() - before
    return {
        "no_policy_dns_queries_per_domain": round(queries / count, 2),
        "no_policy_p50_ms": round(sample["p50_us"] / 1000, 1),
    }


def start_loop_floor(env: Env, keys: Path, loop: str) -> Daemon:
    """`loop_floor.py` on `loop`: a socketmap server that only looks the request up in a dict."""
    script = Path(__file__).with_name("loop_floor.py")
    argv = [sys.executable, str(script), str(LOOP_FLOOR_PORT), str(keys), loop]
    return spawn_ready(f"floor-{loop}", argv, LOOP_FLOOR_PORT, env.workdir, env.server_cpus)


def loops(env: Env) -> dict[str, Any]:
    """7. Cached answers, 20 connections, with both daemons on plain asyncio and on uvloop.

    Same keys, same load generator, and two floors measured in the same run: the C echo
    server's CPU per answer (one read and one write per request, whatever the server is
    written in) and `loop_floor.py`'s on each loop (what the event loop itself costs).
    """
    count, seconds, runs = (200, 2.0, 2) if env.quick else (1000, 5.0, 3)
    keys = keys_file(env, "loops", domains("d", count))
    out: dict[str, Any] = {"echo": ceiling(env)["c20"]}
    for loop in ("asyncio", "uvloop"):
        floor = start_loop_floor(env, keys, loop)
        try:
            run_load(env, floor, keys, 20, "time", 1.0)  # warm-up
            samples = [run_load(env, floor, keys, 20, "time", seconds) for _ in range(runs)]
            out[f"floor_{loop}"] = median_of(samples, LOAD_FIELDS)
            env.log(f"loops floor_{loop}: {out[f'floor_{loop}']}")
        finally:
            floor.stop()
    for name in NAMES:
        for uvloop in (False, True):
            daemon = start_daemon(env, name, uvloop=uvloop)
            try:
                if run_load(env, daemon, keys, 20, "once")["ok"] != count:
                    raise RuntimeError(f"{name}: cache fill failed")
                run_load(env, daemon, keys, 20, "time", 1.0)  # warm-up
                samples = [run_load(env, daemon, keys, 20, "time", seconds) for _ in range(runs)]
                label = f"{name}_{'uvloop' if uvloop else 'asyncio'}"
                out[label] = median_of(samples, LOAD_FIELDS)
                out[f"{label}_runs"] = samples
                env.log(f"loops {label}: {out[label]}")
            finally:
                daemon.stop()
    return out
