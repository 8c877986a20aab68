"""One command: mta-sts-policyd and postfix-mta-sts-resolver side by side (issue 4).

    sudo python3 bench/run.py            # everything (about 10-15 minutes)
    sudo python3 bench/run.py --quick    # reduced sizes, under 2 minutes
    sudo python3 bench/run.py --only cached,cold

Installs the incumbent into bench/.venv-incumbent (pip), builds bench/loadgen.c with cc, then
re-executes itself in a private network namespace where the fixtures own ports 53 and 443.
Results: bench/results/<timestamp>.json and bench/results/latest.md (the table for README.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import netns  # noqa: E402
import report  # noqa: E402

INCUMBENT = "postfix-mta-sts-resolver==1.5.1"
INCUMBENT_EXTRA = "[uvloop]"
"""Its recommended extra; the daemon runs with --disable-uvloop except in the `loops` scenario."""
VENV = BENCH / ".venv-incumbent"
OURS_VENV = BENCH / ".venv-ours"
OURS_EXTRAS = "[speedups,redis,host]"
BENCH_REQUIREMENTS = ("trustme", "py-spy")
"""What the orchestrator and fixtures import besides the daemon's own dependencies."""
RESULTS = BENCH / "results"
SCENARIOS = (
    "ceiling", "cached", "cold", "single_flight", "memory", "refresh", "rtt", "loops", "fleet",
)  # fmt: skip


def ensure_incumbent() -> None:
    if any(VENV.glob("lib/python*/site-packages/uvloop")):
        return
    print(f"installing {INCUMBENT} into {VENV.relative_to(BENCH.parent)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    package = INCUMBENT.replace("==", INCUMBENT_EXTRA + "==")
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", package], check=True)


def ensure_ours() -> None:
    """Run under bench/.venv-ours: this checkout installed as users get it (uvloop included).

    Re-executes the running script (run.py, rtt_study.py, ...) with that interpreter, so the
    daemon, the fixtures and the orchestrator all use exactly the dependencies pip resolves for
    the project, not whatever the machine's Python happens to have.
    """
    python = OURS_VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == OURS_VENV.resolve():
        return
    # the fleet scenario needs redis, host_bench.py the policy host's aiohttp and acme
    extras = ("redis", "aiohttp", "acme")
    has_extras = all(any(OURS_VENV.glob(f"lib/python*/site-packages/{name}")) for name in extras)
    if not python.exists() or not has_extras:
        print(f"installing this checkout into {OURS_VENV.relative_to(BENCH.parent)}", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(OURS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        spec = f"{BENCH.parent}{OURS_EXTRAS}"
        pip = [str(python), "-m", "pip", "install", "-q", "-e", spec, *BENCH_REQUIREMENTS]
        subprocess.run(pip, check=True)
    script = str(Path(sys.argv[0]).resolve())
    os.execv(str(python), [str(python), script, *sys.argv[1:]])


def build_loadgen() -> Path:
    RESULTS.mkdir(exist_ok=True)
    binary = RESULTS / "loadgen"
    source = BENCH / "loadgen.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def run(args: argparse.Namespace, loadgen: Path) -> dict[str, Any]:
    import scenarios
    from fixtures import start_fixtures
    from fleet import fleet as fleet_scenario
    from harness import Env
    from loadgen_ceiling import ceiling

    workdir = Path(tempfile.mkdtemp(prefix="mta-sts-bench-"))
    netns.setup_namespace(workdir)
    split = args.pin == "split"
    fixtures = start_fixtures(str(workdir / "ca.pem"), cpus={1} if split else None)
    env = Env(workdir, fixtures, loadgen, VENV, args.quick)
    env.profile_dir = Path(args.profile).resolve() if args.profile else None
    env.rtt_ms = args.rtt_ms
    if split:
        env.server_cpus, env.client_cpus = "0", "1"
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    if args.quick and not args.only:
        chosen.remove("refresh")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "machine": machine(),
        "pinning": {"server": env.server_cpus, "loadgen": env.client_cpus},
        "incumbent": INCUMBENT,
        "ours_uses_uvloop": importlib.util.find_spec("uvloop") is not None,
        "incumbent_uses_uvloop": False,  # --disable-uvloop outside the `loops` scenario
    }
    steps = {"ceiling": ceiling, **{s: getattr(scenarios, s) for s in SCENARIOS[1:-1]}}
    steps["fleet"] = fleet_scenario
    try:
        for name in chosen:
            env.log(f"scenario {name}")
            results[name] = steps[name](env)
    finally:
        fixtures.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes, under 2 minutes")
    parser.add_argument(
        "--pin",
        choices=("none", "split"),
        default="none",
        help="split: server on CPU 0, load generator and fixtures on CPU 1 (default: no pinning)",
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="sample our daemon with py-spy into DIR (slows it down)"
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--rtt-ms", type=float, default=40.0, help="round-trip time of the rtt scenario (ms)"
    )
    args = parser.parse_args()
    if os.environ.get(netns.MARKER) != "1":
        ensure_ours()
        ensure_incumbent()
        build_loadgen()
    netns.reexec_in_namespace()
    results = run(args, build_loadgen())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    table = report.markdown(results)
    (RESULTS / "latest.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
