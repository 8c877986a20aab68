"""Side-by-side study of cold answers with real round trips: variants of our daemon against the
incumbent, interleaved in rounds in one run (the machine is shared: compare within a round).

    sudo python3 bench/rtt_study.py --rounds 5 --variants theirs,ours,ours:exact_wildcards=false

A variant is `theirs`, `ours`, or `ours:` followed by comma-free `key=value` cache/server
overrides joined by `+` (e.g. `ours:exact_wildcards=false`) and `env.NAME=value` entries.
Prints one line per run and the medians and spreads of each variant's p50/p99 and of its p99
divided by the incumbent's in the same round.
"""

from __future__ import annotations

import argparse
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
            try:
                value = float(value) if "." in value else int(value)
            except ValueError:
                pass
        (server if key in ("exact_wildcards", "dane") else cache)[key] = value
    return name, cache, server, env


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="theirs,ours")
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--conns", type=int, default=20)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if os.environ.get(netns.MARKER) != "1":
        python = bench_run.OURS_VENV / "bin" / "python"
        if Path(sys.prefix).resolve() != bench_run.OURS_VENV.resolve():
            bench_run.ensure_ours.__wrapped__ if False else None
            os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
        bench_run.ensure_incumbent()
        bench_run.build_loadgen()
    netns.reexec_in_namespace()

    from daemons import write_ours_config
    from fixtures import start_fixtures
    from harness import IDLE_KEY, Env, domains, keys_file, run_load
    import daemons

    workdir = Path(tempfile.mkdtemp(prefix="mta-sts-study-"))
    netns.setup_namespace(workdir)
    fixtures = start_fixtures(str(workdir / "ca.pem"))
    env = Env(workdir, fixtures, bench_run.build_loadgen(), bench_run.VENV, True)
    fixtures.set_rtt(args.rtt_ms / 1000)
    variants = args.variants.split(",")
    rows: list[dict[str, Any]] = []
    try:
        for rnd in range(args.rounds):
            order = variants[rnd % len(variants):] + variants[: rnd % len(variants)]
            for spec in order:
                name, cache, server, extra_env = parse_variant(spec)
                if name == "ours":
                    state = workdir / f"state-{time.monotonic_ns()}"
                    state.mkdir()
                    config = write_ours_config(workdir, fixtures.ca_pem, state, **cache)
                    if server:
                        text = config.read_text().replace(
                            "[server]\n",
                            "[server]\n" + "".join(
                                f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}\n"
                                for k, v in server.items()
                            ),
                        )
                        config.write_text(text)
                    main_code = daemons._OURS_MAIN
                    if extra_env.pop("NO_UVLOOP", "") == "1":
                        main_code = daemons._NO_UVLOOP + main_code
                    argv = [sys.executable, "-c", main_code, "serve", "-c", str(config)]
                    daemon = daemons.spawn("ours", argv, daemons.OURS_PORT, workdir, None, extra_env)
                else:
                    config = daemons.write_theirs_config(workdir)
                    daemon = daemons.start_theirs(workdir, env.venv, config, fixtures.ca_pem, None)
                try:
                    daemons.wait_answering(daemon, IDLE_KEY)
                    names = domains(f"s{rnd}-{abs(hash(spec)) % 10**6}-", args.domains)
                    fixtures.prepare(names)
                    time.sleep(0.3)
                    fixtures.lateness()
                    sample = run_load(env, daemon, keys_file(env, "study", names), args.conns, "once")
                    late = fixtures.lateness()
                    if sample["ok"] != args.domains:
                        print(f"!! {spec}: {sample['ok']} OK", daemon.log_tail(5), flush=True)
                    row = {"round": rnd, "variant": spec, **{k: sample[k] for k in (
                        "p50_us", "p90_us", "p99_us", "max_us", "cpu_us_per_answer",
                        "fixtures_cpu_us_per_answer", "fixtures_cpu_us_per_answer_https_dns_relay", "ok", "user_us_per_answer", "system_us_per_answer")}, "late": late,
                        "load": os.getloadavg()[0]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                finally:
                    daemon.stop()
    finally:
        fixtures.stop()
    print("\nvariant                                   p50 ms (spread)   p99 ms (spread)   p99/theirs (spread)  cpu us")
    theirs = {r["round"]: r["p99_us"] for r in rows if r["variant"] == "theirs"}
    for spec in variants:
        mine = [r for r in rows if r["variant"] == spec]
        if not mine:
            continue
        p50 = [r["p50_us"] / 1000 for r in mine]
        p99 = [r["p99_us"] / 1000 for r in mine]
        ratio = [r["p99_us"] / theirs[r["round"]] for r in mine if r["round"] in theirs]
        cpu = [r["cpu_us_per_answer"] for r in mine]
        print(f"{spec:40s} {statistics.median(p50):7.1f} ({min(p50):.0f}-{max(p50):.0f})"
              f"  {statistics.median(p99):7.1f} ({min(p99):.0f}-{max(p99):.0f})"
              f"  {statistics.median(ratio):5.2f} ({min(ratio):.2f}-{max(ratio):.2f})"
              f"  {statistics.median(cpu):6.0f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
