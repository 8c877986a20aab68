"""Cold answers with real round trips: variants of our daemon beside the incumbent, in rounds.

    sudo python3 bench/rtt_study.py --rounds 6 --variants theirs,ours,ours:exact_wildcards=false

The rtt scenario of run.py runs each daemon once; on a shared machine the load of other jobs
moves a p99 more than most changes do. This runs every variant once per round, in a rotating
order, with new names each time, and reports each variant's median and spread of p50, p99 and
of its p99 divided by the incumbent's in the same round.

A variant is `theirs`, `ours`, or `ours:` followed by `+`-joined `key=value` overrides of our
configuration (`exact_wildcards` and `dane` go to [server], other keys to [cache]) and
`env.NAME=value` for the daemon's environment (`env.PYTHONPATH=DIR/daemon` runs another tree;
`env.NO_UVLOOP=1` plain asyncio).

`--trace-dir DIR` keeps every run's per-answer trace (the load generator's LOADGEN_TRACE: send
time and latency of each answer) and adds the first burst to each row and to the summary: the
latencies of the first request of every connection, all sent at once, and how many of the
run's three slowest answers were among them (it is where the p99 comes from).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import netns  # noqa: E402
import run as bench_run  # noqa: E402

SERVER_KEYS = ("exact_wildcards", "dane")
FIELDS = (
    "p50_us",
    "p90_us",
    "p99_us",
    "max_us",
    "ok",
    "cpu_us_per_answer",
    "user_us_per_answer",
    "system_us_per_answer",
    "fixtures_cpu_us_per_answer",
    "fixtures_cpu_us_per_answer_https_dns_relay",
)


def parse_variant(spec: str) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, str]]:
    name, _, rest = spec.partition(":")
    cache: dict[str, Any] = {}
    server: dict[str, Any] = {}
    env: dict[str, str] = {}
    for item in filter(None, rest.split("+")):
        key, _, raw = item.partition("=")
        if key.startswith("env."):
            env[key[4:]] = raw
            continue
        value: Any = {"true": True, "false": False}.get(raw, raw)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value) if "." in value else int(value)
        (server if key in SERVER_KEYS else cache)[key] = value
    return name, cache, server, env


def start(spec: str, workdir: Path, fixtures: Any) -> Any:
    import daemons

    name, cache, server, env = parse_variant(spec)
    if name == "theirs":
        config = daemons.write_theirs_config(workdir)
        return daemons.start_theirs(workdir, bench_run.VENV, config, fixtures.ca_pem, None)
    state = workdir / f"state-{time.monotonic_ns()}"
    state.mkdir()
    config = daemons.write_ours_config(workdir, fixtures.ca_pem, state, **cache)
    if server:
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.items())
        config.write_text(config.read_text().replace("[server]\n", "[server]\n" + lines))
    main = daemons._OURS_MAIN
    if env.pop("NO_UVLOOP", "") == "1":
        main = daemons._NO_UVLOOP + main
    argv = [sys.executable, "-c", main, "serve", "-c", str(config)]
    return daemons.spawn("ours", argv, daemons.OURS_PORT, workdir, None, env)


def trace_path(directory: str, rnd: int, spec: str) -> Path | None:
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory) / f"round{rnd}-{spec.replace('/', '_').replace(':', '_')}.txt"


def first_burst(trace: Path, conns: int) -> dict[str, Any]:
    """The answers to the first request of every connection (all sent at once): their
    latencies, and how many of the three slowest answers of the run are among them."""
    rows = [tuple(map(float, line.split())) for line in trace.read_text().splitlines()]
    firsts = sorted(rows, key=lambda r: r[0])[:conns]
    first_ms = sorted(latency / 1000 for _, latency in firsts)
    slowest = sorted(rows, key=lambda r: -r[1])[:3]
    return {
        "min_ms": round(first_ms[0], 1),
        "median_ms": round(statistics.median(first_ms), 1),
        "max_ms": round(first_ms[-1], 1),
        "slowest_3_in_it": sum(1 for r in slowest if r in firsts),
    }


def summary(rows: list[dict[str, Any]], variants: list[str]) -> str:
    lines = ["variant | p50 ms (range) | p99 ms (range) | p99 / theirs (range) | CPU µs/answer"]
    theirs = {r["round"]: r["p99_us"] for r in rows if r["variant"] == "theirs"}
    for spec in variants:
        mine = [r for r in rows if r["variant"] == spec]
        if not mine:
            continue
        p50 = [r["p50_us"] / 1000 for r in mine]
        p99 = [r["p99_us"] / 1000 for r in mine]
        ratio = [r["p99_us"] / theirs[r["round"]] for r in mine if r["round"] in theirs] or [0]
        cpu = statistics.median(r["cpu_us_per_answer"] for r in mine)
        lines.append(
            f"{spec} | {statistics.median(p50):.0f} ({min(p50):.0f}-{max(p50):.0f})"
            f" | {statistics.median(p99):.0f} ({min(p99):.0f}-{max(p99):.0f})"
            f" | {statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}) | {cpu:.0f}"
        )
        bursts = [r["first_burst"] for r in mine if "first_burst" in r]
        if bursts:
            lines.append(
                f"  first burst of {spec}: min/median/max ms "
                + ", ".join(
                    f"{b['min_ms']:.0f}/{b['median_ms']:.0f}/{b['max_ms']:.0f}" for b in bursts
                )
                + f"; slowest 3 of the run in it: {sum(b['slowest_3_in_it'] for b in bursts)}"
                f" of {3 * len(bursts)}"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="theirs,ours")
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--conns", type=int, default=20)
    parser.add_argument("--out", default="", help="write every run as JSON here")
    parser.add_argument(
        "--trace-dir",
        default="",
        help="keep each run's per-answer trace here (LOADGEN_TRACE) and report the first burst",
    )
    args = parser.parse_args()
    if os.environ.get(netns.MARKER) != "1":
        bench_run.ensure_incumbent()
        bench_run.build_loadgen()
        bench_run.ensure_ours()
    netns.reexec_in_namespace()

    from daemons import wait_answering
    from fixtures import start_fixtures
    from harness import IDLE_KEY, Env, domains, keys_file, run_load

    workdir = Path(tempfile.mkdtemp(prefix="mta-sts-study-"))
    netns.setup_namespace(workdir)
    fixtures = start_fixtures(str(workdir / "ca.pem"))
    env = Env(workdir, fixtures, bench_run.build_loadgen(), bench_run.VENV, True)
    fixtures.set_rtt(args.rtt_ms / 1000)
    variants = args.variants.split(",")
    rows: list[dict[str, Any]] = []
    try:
        for rnd in range(args.rounds):
            shift = rnd % len(variants)
            for number, spec in enumerate(variants[shift:] + variants[:shift]):
                daemon = start(spec, workdir, fixtures)
                try:
                    wait_answering(daemon, IDLE_KEY)
                    names = domains(f"s{rnd}-{number}-{time.monotonic_ns() % 10**6}-", args.domains)
                    fixtures.prepare(names)
                    fixtures.lateness()  # start counting now
                    keys = keys_file(env, "study", names)
                    trace = trace_path(args.trace_dir, rnd, spec)
                    if trace is not None:
                        os.environ["LOADGEN_TRACE"] = str(trace)
                    try:
                        sample = run_load(env, daemon, keys, args.conns, "once")
                    finally:
                        os.environ.pop("LOADGEN_TRACE", None)
                    row = {"round": rnd, "variant": spec, **{k: sample[k] for k in FIELDS}}
                    if trace is not None:
                        row["first_burst"] = first_burst(trace, args.conns)
                    row["late"] = fixtures.lateness()
                    row["loadavg"] = os.getloadavg()[0]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if sample["ok"] != args.domains:
                        print(f"!! {spec}: {sample['ok']}/{args.domains} OK", flush=True)
                finally:
                    daemon.stop()
    finally:
        fixtures.stop()
    print(summary(rows, variants))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
