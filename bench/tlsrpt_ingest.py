"""TLS-RPT datagram ingestion: our collector + store vs sys4 tlsrpt-collectd 0.6.0, side by side.

    python bench/tlsrpt_ingest.py [--quick] [--rates 2000,5000,10000] [--seconds 20]

For each receiver and rate, a paced sender in its own process sends the same libtlsrpt-format
datagrams non-blocking (MSG_DONTWAIT, as libtlsrpt does) to a fresh socket. Loss = datagrams the
sender got EAGAIN for + datagrams accepted but not found in the receiver's SQLite database. CPU
per datagram = utime+stime of the receiver's processes (ours: the collector and its receiver
child; all threads, incl. the final commit) from ready to exit, divided by the datagrams stored.
tlsrpt-collectd is installed from the package index into bench/.venv-tlsrpt on first use.
Results and their reading: bench/tlsrpt_ingest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-tlsrpt"
COLLECTD = VENV / "bin" / "tlsrpt-collectd"
REPORTER = "tlsrpt-reporter==0.6.0"
MAX_BURST = 4
CODES = [201, 202, 203, 204, 205, 301, 302, 303, 304, 305]


# -- the datagrams ---------------------------------------------------------------------------


def libtlsrpt_json(value: object) -> str:
    """Serialise like libtlsrpt: `"key": "str"` with a space, `"key":1` without
    (docs/conformance.md: DG-encoding)."""
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            sep = ": " if isinstance(item, str) else ":"
            parts.append(f"{json.dumps(key)}{sep}{libtlsrpt_json(item)}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list):
        return "[" + ",".join(libtlsrpt_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def corpus(seed: int = 8460) -> tuple[list[bytes], list[float]]:
    """Datagrams as Postfix 3.10 sends them for 300 domains, and a Zipf-like popularity weight.

    95 % success datagrams (identical bytes per domain, as in real traffic), 5 % failures with
    varying MX, addresses and reasons.
    """
    rng = random.Random(seed)
    datagrams: list[bytes] = []
    weights: list[float] = []
    for i in range(300):
        domain = f"d{i}.example"
        kind = rng.choices([2, 1, 9], [70, 20, 10])[0]
        policy: dict[str, object] = {"policy-type": kind}
        if kind == 2:
            mx = f"*.mx.{domain}"
            policy["policy-domain"] = domain
            policy["policy-string"] = [
                "version: STSv1",
                "mode: enforce",
                f"mx: {mx}",
                "max_age: 604800",
            ]
            policy["mx-host"] = [mx]
        elif kind == 1:
            policy["policy-domain"] = f"mx1.{domain}"
            policy["policy-string"] = [f"3 1 1 {rng.getrandbits(256):064X}"]
        head = {"dpv": "1", "d": domain, "pr": f"v=TLSRPTv1;rua=mailto:tlsrpt@{domain}"}
        weight = 1.0 / (i + 1)
        ok = {**head, "policies": [{**policy, "t": 0, "f": 0}]}
        datagrams.append(libtlsrpt_json(ok).encode())
        weights.append(weight * 0.95)
        for k in range(4):
            detail = {
                "c": rng.choice(CODES),
                "s": "192.0.2.10",
                "n": f"mx{k}.mx.{domain}",
                "h": f"mx{k}.mx.{domain} ESMTP",
                "r": f"198.51.100.{rng.randrange(1, 255)}",
                "f": rng.choice(["certificate has expired", "unable to get local issuer", ""]),
            }
            bad = {**head, "policies": [{**policy, "failure-details": [detail], "t": 1, "f": 1}]}
            datagrams.append(libtlsrpt_json(bad).encode())
            weights.append(weight * 0.05 / 4)
    return datagrams, weights


# -- child roles -----------------------------------------------------------------------------


def run_sender(path: str, rate: float, seconds: float) -> None:
    """Paced non-blocking sender; bursts of at most MAX_BURST when it fell behind (see .md)."""
    datagrams, weights = corpus()
    count = int(rate * seconds)
    order = random.Random(1).choices(range(len(datagrams)), weights, k=count)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sent = eagain = errors = max_lag = 0
    start = time.monotonic()
    while sent < count:
        due = min(count, int((time.monotonic() - start) * rate) + 1)
        max_lag = max(max_lag, due - sent)
        due = min(due, sent + MAX_BURST)
        while sent < due:
            try:
                sock.sendto(datagrams[order[sent]], socket.MSG_DONTWAIT, path)
            except BlockingIOError:
                eagain += 1
            except OSError:
                errors += 1
            sent += 1
        time.sleep(0.0002)
    elapsed = time.monotonic() - start
    result = {"sent": sent, "eagain": eagain, "errors": errors, "elapsed": elapsed}
    print(json.dumps({**result, "max_lag": max_lag}))


def run_ours(path: str, db: str, realtime: bool) -> None:
    """Our collector (and its receiver process) feeding the real TlsRptStore, until a line
    arrives on stdin."""
    sys.path.insert(0, str(HERE.parent / "daemon"))
    from mta_sts_policyd.tlsrpt.libtlsrpt.collector import TlsRptCollector
    from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore

    store = TlsRptStore(db)
    collector = TlsRptCollector(path, store, realtime_recv=realtime)
    collector.start()
    print("ready", collector.receiver_pid, flush=True)
    sys.stdin.readline()
    drained = collector.stop(30)
    store.close()
    stats = collector.stats
    print(
        json.dumps(
            {
                "drained": drained,
                "received": stats.received,
                "rejected": stats.rejected,
                "priority": stats.recv_priority,
                "restarts": stats.receiver_restarts,
                "backlog_dropped": stats.backlog_dropped,
                "dropped": store.dropped,
            }
        ),
        flush=True,
    )


def run_floor(path: str) -> None:
    """Control: a bare Python recv loop in a thread, no parsing, no storage."""
    import threading

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    count = [0]

    def loop() -> None:
        while sock.recv(65536):
            count[0] += 1

    threading.Thread(target=loop, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps({"received": count[0]}), flush=True)


# -- the parent ------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ensure_collectd() -> None:
    if COLLECTD.exists():
        return
    print(f"installing {REPORTER} into {VENV.relative_to(HERE.parent)} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", REPORTER]
    subprocess.run(pip, check=True)


def wait_until(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("receiver did not come up")
        time.sleep(0.02)


def start_receiver(kind: str, tmp: Path) -> tuple[subprocess.Popen[str], int | None]:
    """The receiver, and the pid of our collector's receiver process (None for the others)."""
    sock, db = tmp / "tlsrpt.sock", tmp / "tlsrpt.sqlite"
    if kind == "tlsrpt-collectd":
        cfg = tmp / "collectd.cfg"
        cfg.write_text("[tlsrpt_collectd]\n")
        cmd = [
            str(COLLECTD),
            "--config_file",
            str(cfg),
            "--storage",
            f"sqlite://{db}",
            "--socketname",
            str(sock),
            "--pidfilename",
            "",
            "--logfilename",
            str(tmp / "log"),
            "--log_level",
            "warning",
            "--dump_path_for_invalid_datagram",
            str(tmp / "bad"),
        ]
        proc = subprocess.Popen(cmd, text=True, stdout=subprocess.DEVNULL)
        wait_until(lambda: sock.exists() and db.exists())
        time.sleep(0.3)
        return proc, None
    role = "_floor" if kind == "recv-floor" else "_ours"
    args = [sys.executable, __file__, role, str(sock), str(db), kind]
    proc = subprocess.Popen(args, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    word, *pid = proc.stdout.readline().split()
    if word != "ready":
        raise RuntimeError("our collector did not start")
    return proc, int(pid[0]) if pid else None


def stored(kind: str, db: Path) -> int:
    sql = (
        "SELECT COALESCE(SUM(cntrtotal), 0) FROM finalresults"
        if kind == "tlsrpt-collectd"
        else "SELECT COALESCE(SUM(successes + failures), 0) FROM agg"
    )
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


def run_one(kind: str, rate: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="tlsrpt-bench-") as name:
        tmp = Path(name)
        load = os.getloadavg()[0]
        proc, child = start_receiver(kind, tmp)
        # Both our processes count: wait4's rusage includes the receiver, which our collector
        # reaps at stop; their start-up (before "ready") does not.
        recv0 = proc_cpu(child) if child else 0.0
        cpu0 = proc_cpu(proc.pid) + recv0
        cmd = [sys.executable, __file__, "_send", str(tmp / "tlsrpt.sock"), str(rate), str(seconds)]
        sender = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        time.sleep(0.5)
        recv_cpu = proc_cpu(child) - recv0 if child else 0.0
        if kind == "tlsrpt-collectd":
            proc.send_signal(signal.SIGTERM)
            info: dict[str, object] = {}
        else:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if kind != "tlsrpt-collectd":
            assert proc.stdout is not None
            info = json.loads(proc.stdout.read())
        cpu = usage.ru_utime + usage.ru_stime - cpu0
        if kind == "recv-floor":
            kept = int(info["received"])  # type: ignore[call-overload]
        else:
            kept = stored(kind, tmp / "tlsrpt.sqlite")
        sent = int(sender["sent"])
        return {
            "receiver": kind,
            "rate": rate,
            "sent": sent,
            "eagain": sender["eagain"],
            "stored": kept,
            "loss_pct": 100.0 * (sent - kept) / sent,
            "cpu_us": 1e6 * cpu / max(kept, 1),
            "recv_cpu_us": 1e6 * recv_cpu / max(kept, 1),
            "achieved": sent / float(sender["elapsed"]),
            "max_lag": sender["max_lag"],
            "load": load,
            **info,
        }


COLUMNS = (
    "| receiver | rate/s | sent | EAGAIN | stored | loss % | CPU µs/datagram (receiver proc) "
    "| sender rate | max lag | load |"
)


def table_row(row: dict[str, Any]) -> str:
    recv = f" ({row['recv_cpu_us']:.1f})" if row.get("recv_cpu_us") else ""
    return (
        f"| {row['receiver']} | {row['rate']} | {row['sent']} | {row['eagain']} | "
        f"{row['stored']} | {row['loss_pct']:.3f} | {row['cpu_us']:.1f}{recv} | "
        f"{row['achieved']:.0f} | {row['max_lag']} | {row['load']:.2f} |"
    )


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per receiver and rate, the run with the median loss; CPU and load are medians too."""
    out = []
    keys = dict.fromkeys((r["receiver"], r["rate"]) for r in rows)
    for kind, rate in keys:
        runs = sorted(
            (r for r in rows if (r["receiver"], r["rate"]) == (kind, rate)),
            key=lambda r: r["loss_pct"],
        )
        mid = dict(runs[len(runs) // 2])
        for field in ("cpu_us", "recv_cpu_us", "load"):
            mid[field] = statistics.median(float(r.get(field, 0.0)) for r in runs)
        mid["runs"] = len(runs)
        mid["loss_all"] = [round(r["loss_pct"], 3) for r in rows if r in runs]
        out.append(mid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run (< 1 minute in all)")
    parser.add_argument("--rates", default="2000,5000,10000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1, help="runs per receiver and rate")
    parser.add_argument(
        "--receivers",
        default="ours,ours-normal-priority,tlsrpt-collectd",
        help="comma list; also: recv-floor (bare recv loop, the control for machine noise)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw rows here")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    receivers = args.receivers.split(",")
    if "tlsrpt-collectd" in receivers:
        ensure_collectd()
    rows = []
    print(COLUMNS)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for _ in range(args.runs):
        for rate in (int(r) for r in args.rates.split(",")):
            for kind in receivers:  # interleaved, so machine load hits every receiver alike
                rows.append(run_one(kind, rate, seconds))
                print(table_row(rows[-1]), flush=True)
    summary = medians(rows)
    if args.runs > 1:
        print(f"\nmedian of {args.runs} runs (loss of each run in brackets)\n")
        print(COLUMNS)
        print("|---|---|---|---|---|---|---|---|---|---|")
        for row in summary:
            print(table_row(row), row["loss_all"])
    theirs = {r["rate"]: r["cpu_us"] for r in summary if r["receiver"] == "tlsrpt-collectd"}
    for row in summary:
        if row["receiver"] != "tlsrpt-collectd" and row["rate"] in theirs:
            ratio = float(row["cpu_us"]) / float(theirs[row["rate"]])
            print(f"CPU ratio {row['receiver']} / tlsrpt-collectd at {row['rate']}/s: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "median": summary}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_send":
        run_sender(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_floor":
        run_floor(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "_ours":
        run_ours(sys.argv[2], sys.argv[3], sys.argv[4] == "ours")
    else:
        main()
