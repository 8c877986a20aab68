"""CPU instructions per cold answer, ours and the incumbent's, counted by valgrind.

    sudo python3 bench/cold_instructions.py [--domains 10,40] [--conns 1] [--ours-path DIR]

Why: on a shared machine, CPU seconds per answer move by tens of percent with the load of
other jobs (SMT siblings and caches are shared); the number of user-space instructions a
daemon executes per cold answer does not (runs repeat within ~1 %). Each daemon is started
under `valgrind --tool=cachegrind --cache-sim=no` twice, answers N1 and then N2 never-seen
domains of the benchmark's fixtures (no added delay), and exits; (I(N2) - I(N1)) / (N2 - N1)
is its count per cold answer: start-up and shutdown cancel out. Kernel work (system calls,
TCP) is not counted. Needs valgrind (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import netns  # noqa: E402
import run as bench_run  # noqa: E402

VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def count(
    name: str, n: int, env_extra: dict[str, str], args: argparse.Namespace, ctx: dict[str, Any]
) -> int:
    import daemons
    from harness import IDLE_KEY, domains

    workdir: Path = ctx["workdir"]
    fixtures = ctx["fixtures"]
    log = workdir / f"valgrind-{name}-{n}-{time.monotonic_ns()}.log"
    vg = [*VALGRIND, f"--log-file={log}"]
    if name == "ours":
        state = workdir / f"state-{time.monotonic_ns()}"
        state.mkdir()
        config = daemons.write_ours_config(workdir, fixtures.ca_pem, state, cold_wait=60.0)
        argv = [*vg, sys.executable, "-c", daemons._OURS_MAIN, "serve", "-c", str(config)]
        daemon = daemons.spawn("ours", argv, daemons.OURS_PORT, workdir, None, env_extra)
    else:
        config = daemons.write_theirs_config(workdir)
        argv = [*vg, str(bench_run.VENV / "bin" / "mta-sts-daemon"), "-c", str(config),
                "--disable-uvloop"]  # fmt: skip
        daemon = daemons.spawn(
            "theirs", argv, daemons.THEIRS_PORT, workdir, None, {"SSL_CERT_FILE": fixtures.ca_pem}
        )
    try:
        daemons.wait_answering(daemon, IDLE_KEY, timeout=600)
        names = domains(f"vg{n}-{name}-{time.monotonic_ns() % 10**6}-", n)
        fixtures.prepare(names)
        keys = workdir / "vg-keys.txt"
        keys.write_text("\n".join(names) + "\n")
        argv = [str(ctx["loadgen"]), "client", "127.0.0.1", str(daemon.port), str(args.conns),
                str(keys), "once", "0"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if f'"ok": {n},' not in out.stdout:
            raise RuntimeError(f"{name}: {out.stdout} {out.stderr} {daemon.log_tail()}")
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        daemon.process.wait(600)
    match = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text())
    if match is None:
        raise RuntimeError(f"no instruction count in {log}")
    return int(match.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", default="10,40", help="N1,N2 cold domains per daemon run")
    parser.add_argument("--conns", type=int, default=1, help="connections of the load generator")
    parser.add_argument("--only", default="ours,theirs")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="emulated round trip, ms")
    parser.add_argument(
        "--ours-path", default="", help="a daemon/ directory to run instead of this checkout's"
    )
    args = parser.parse_args()
    if os.environ.get(netns.MARKER) != "1":
        bench_run.ensure_incumbent()
        bench_run.build_loadgen()
        bench_run.ensure_ours()
    netns.reexec_in_namespace()
    from fixtures import start_fixtures

    workdir = Path(tempfile.mkdtemp(prefix="mta-sts-vg-"))
    netns.setup_namespace(workdir)
    fixtures = start_fixtures(str(workdir / "ca.pem"))
    ctx = {"workdir": workdir, "fixtures": fixtures, "loadgen": bench_run.build_loadgen()}
    if args.rtt_ms:
        fixtures.set_rtt(args.rtt_ms / 1000)
    n1, n2 = (int(x) for x in args.domains.split(","))
    env_extra = {"PYTHONPATH": args.ours_path} if args.ours_path else {}
    try:
        for name in args.only.split(","):
            low = count(name, n1, env_extra, args, ctx)
            high = count(name, n2, env_extra, args, ctx)
            per = (high - low) / (n2 - n1)
            detail = f"{n1}: {low:,}, {n2}: {high:,}; {args.conns} connection(s)"
            print(f"{name}: {per / 1e6:.2f} M instructions per cold answer ({detail})", flush=True)
    finally:
        fixtures.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
