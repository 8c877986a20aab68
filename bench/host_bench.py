"""The policy host (`mta-sts-policyd host`) with many domains: requests per second, CPU per
request and memory.

The world: N domains `dK.host.test`, each with a policy folder as `generate --write` makes it
and a trustme certificate for `mta-sts.dK.host.test` in certbot's layout, all minted before the
host starts (minting is not what is measured). The host runs as a child process
(`python -m mta_sts_policyd host -c FILE`, listening on 127.0.0.1); its RSS is read from
/proc after start-up (every certificate loaded) and after the load, its CPU from
/proc/PID/stat around each load phase.

Two load shapes, each from client processes (stdlib ssl + http.client; their CPU competes
with the host's on a small machine, so the client CPU is reported too):
- `fetch`: a new TLS connection per request, SNI cycling through every domain, GET, close:
  what senders do (one policy fetch per connection, RFC 8461 §3.3);
- `keepalive`: one connection per client thread to one domain, GET after GET.

Usage: `python bench/host_bench.py [--domains 1000] [--seconds 10] [--clients 2]
[--threads 8] [--json FILE]`; like run.py it re-runs itself in bench/.venv-ours, where this
checkout is installed with the policy host's dependencies.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO), str(REPO / "daemon")]

from tests.support.ports import free_port  # noqa: E402

import run as bench_run  # noqa: E402

POLICY = "version: STSv1\nmode: enforce\nmx: mx1.{d}\nmx: *.mx.{d}\nmax_age: 604800\n"
TICK = os.sysconf("SC_CLK_TCK")


def domain(i: int) -> str:
    return f"d{i}.host.test"


def build_world(root: Path, count: int) -> Path:
    """Policies, certificates and the config file; returns the config's path."""
    import trustme  # bench/.venv-ours has it (bench_run.ensure_ours)

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    now = datetime.now(UTC)
    for i in range(count):
        d = domain(i)
        policy = root / "policies" / d / ".well-known" / "mta-sts.txt"
        policy.parent.mkdir(parents=True)
        policy.write_text(POLICY.format(d=d))
        leaf = ca.issue_cert(
            f"mta-sts.{d}", not_before=now - timedelta(days=1), not_after=now + timedelta(days=90)
        )
        folder = root / "certs" / f"mta-sts.{d}"
        folder.mkdir(parents=True)
        (folder / "fullchain.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        (folder / "privkey.pem").write_bytes(leaf.private_key_pem.bytes())
    port = free_port()
    config = root / "host.toml"
    config.write_text(
        f'[cache]\nstate_dir = "{root / "state"}"\n[logging]\nlevel = "WARNING"\n'
        f'[host]\nlisten = ["127.0.0.1:{port}"]\npolicy_dir = "{root / "policies"}"\n'
        f'cert_dirs = ["{root / "certs"}"]\npoll_interval = 3600\n'
    )
    return config


def port_of(config: Path) -> int:
    text = config.read_text()
    return int(text.split('listen = ["127.0.0.1:', 1)[1].split('"', 1)[0])


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


def start_host(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    process = subprocess.Popen(
        [sys.executable, "-m", "mta_sts_policyd", "host", "-c", str(config)], env=env
    )
    port = port_of(config)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit("the host exited during start-up") from None
            time.sleep(0.1)
    raise SystemExit("the host did not start listening")


def _client(args: tuple[str, int, str, int, int, int, float, int]) -> tuple[int, int, float]:
    """One client process: `threads` threads for `seconds`; (answers, errors, own CPU)."""
    shape, port, ca, count, threads, offset, seconds, index = args
    context = ssl.create_default_context(cafile=ca)
    stop = time.monotonic() + seconds
    counts = [0, 0]
    lock = threading.Lock()

    def fetch(k: int) -> None:
        i, ok, bad = k, 0, 0
        while time.monotonic() < stop:
            host = f"mta-sts.{domain(i % count)}"
            i += threads * 7 + 1
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
                conn.sock = context.wrap_socket(
                    socket.create_connection(("127.0.0.1", port)), server_hostname=host
                )
                conn.request("GET", "/.well-known/mta-sts.txt", headers={"Host": host})
                response = conn.getresponse()
                body = response.read()
                conn.close()
                ok += response.status == 200 and body.startswith(b"version: STSv1")
                bad += response.status != 200
            except OSError:
                bad += 1
        with lock:
            counts[0] += ok
            counts[1] += bad

    def keepalive(k: int) -> None:
        host = f"mta-sts.{domain((k * 37 + index * 101) % count)}"
        ok, bad = 0, 0
        raw = context.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname=host
        )
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        conn.sock = raw
        while time.monotonic() < stop:
            conn.request("GET", "/.well-known/mta-sts.txt", headers={"Host": host})
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
            bad += response.status != 200
        conn.close()
        with lock:
            counts[0] += ok
            counts[1] += bad

    work = fetch if shape == "fetch" else keepalive
    pool = [threading.Thread(target=work, args=(offset + t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return counts[0], counts[1], usage.ru_utime + usage.ru_stime


def load(shape: str, config: Path, pid: int, opts: argparse.Namespace) -> dict[str, Any]:
    port = port_of(config)
    ca = str(config.parent / "ca.pem")
    jobs = [
        (shape, port, ca, opts.domains, opts.threads, c * opts.threads, opts.seconds, c)
        for c in range(opts.clients)
    ]
    before = cpu_seconds(pid)
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(opts.clients) as pool:
        results = pool.map(_client, jobs)
    wall = time.monotonic() - started
    host_cpu = cpu_seconds(pid) - before
    answers = sum(r[0] for r in results)
    return {
        "shape": shape,
        "answers": answers,
        "errors": sum(r[1] for r in results),
        "seconds": round(wall, 2),
        "requests_per_second": round(answers / opts.seconds, 1),
        "host_cpu_ms_per_request": round(1000 * host_cpu / max(answers, 1), 3),
        "host_cpu_cores": round(host_cpu / opts.seconds, 2),
        "client_cpu_seconds": round(sum(r[2] for r in results), 1),
        "host_rss_kib_after": rss_kib(pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per client process")
    parser.add_argument("--json", type=Path, help="also write the results here")
    opts = parser.parse_args()
    bench_run.ensure_ours()
    with tempfile.TemporaryDirectory(prefix="host-bench-") as tmp:
        root = Path(tmp)
        minted = time.monotonic()
        config = build_world(root, opts.domains)
        minted = time.monotonic() - minted
        started = time.monotonic()
        host = start_host(config)
        try:
            startup = time.monotonic() - started
            time.sleep(1.0)
            result: dict[str, Any] = {
                "domains": opts.domains,
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "mint_seconds": round(minted, 1),
                "startup_seconds": round(startup, 2),
                "host_rss_kib_idle": rss_kib(host.pid),
                "host_cpu_seconds_startup": round(cpu_seconds(host.pid), 2),
                "runs": [load(shape, config, host.pid, opts) for shape in ("fetch", "keepalive")],
            }
        finally:
            host.terminate()
            host.wait(30)
    text = json.dumps(result, indent=2)
    print(text)
    if opts.json:
        opts.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
