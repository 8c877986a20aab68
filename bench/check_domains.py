"""`check` of many own domains on loopback: wall time and CPU of the command, by concurrency.

The world (in this process, on threads): a DNS server; the policy hosts `mta-sts.dN.check.test`
on two addresses (127.0.0.1 and 127.0.0.2, one port) with trustme certificates minted before
the clock starts; 20 MX hosts `mxK.check.test` (127.0.0.10-29, one SMTP port) offering
STARTTLS with valid certificates; every domain has 2 MX hosts, a TXT record with a derived id
and a TLS-RPT record. So each domain costs 7 DNS questions for its own names plus 2 per MX
(A/AAAA) plus TLSA, 2 TLS inspections and 2 HTTPS fetches, and 2 SMTP STARTTLS sessions.

`check` runs as a child process (`python -m mta_sts_policyd check --json --from-file ...`);
its wall time and its user+system CPU (RUSAGE_CHILDREN) are measured, and so is the fixtures'
CPU (this process, RUSAGE_SELF): on a 2-core machine the two compete, so wall time at high
concurrency is bounded by their sum.
Usage: `python bench/check_domains.py [--domains 100] [--concurrency 10 50] [--repeat 3]
[--json FILE]` (it puts daemon/ on the path itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trustme

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "daemon"))

from tests.support.check_world import derived_id, enforce_policy  # noqa: E402
from tests.support.dns_server import DnsServer  # noqa: E402
from tests.support.https_server import HttpsServer, Site  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.smtp_server import LoopbackSmtpServer, SmtpBehaviour  # noqa: E402

MX_COUNT = 20
HTTPS = ("127.0.0.1", "127.0.0.2")


def domain(i: int) -> str:
    return f"d{i}.check.test"


def mx_host(k: int) -> str:
    return f"mx{k}.check.test"


def build_dns(dns: DnsServer, count: int) -> None:
    for k in range(MX_COUNT):
        dns.set_a(mx_host(k), f"127.0.0.{10 + k}")
    for i in range(count):
        d = domain(i)
        mxs = (mx_host(i % MX_COUNT), mx_host((i + 1) % MX_COUNT))
        policy = enforce_policy(*mxs)
        dns.set_txt(f"_mta-sts.{d}", f"v=STSv1; id={derived_id(policy)}")
        dns.set_a(f"mta-sts.{d}", *HTTPS)
        dns.set_mx(d, (10, mxs[0]), (20, mxs[1]))
        dns.set_txt(f"_smtp._tls.{d}", f"v=TLSRPTv1; rua=mailto:tlsrpt@{mxs[0]}")


def site_for(name: str) -> Site | None:
    if not name.startswith("mta-sts.d"):
        return None
    d = name.removeprefix("mta-sts.")
    i = int(d.split(".")[0][1:])
    policy = enforce_policy(mx_host(i % MX_COUNT), mx_host((i + 1) % MX_COUNT))
    return Site(body=policy.encode())


class SmtpThread:
    """The MX servers on their own event loop in a thread."""

    def __init__(self, certs: Any) -> None:
        self.port = free_port([f"127.0.0.{10 + k}" for k in range(MX_COUNT)])
        self._certs = certs
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SmtpThread:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        servers = []
        for k in range(MX_COUNT):
            host = mx_host(k)
            tls = self._certs.context("valid", (host,))
            behaviour = SmtpBehaviour(tls=tls, banner=f"220 {host} ESMTP", helo_name=host)
            server = LoopbackSmtpServer(behaviour, f"127.0.0.{10 + k}", self.port)
            await server.__aenter__()
            servers.append(server)
        self._ready.set()
        await self._stop.wait()
        for server in servers:
            await server.__aexit__(None, None, None)


def run_check(args: list[str]) -> tuple[float, float, dict[str, Any]]:
    """Wall and CPU seconds of one `check` child, and its JSON."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    done = subprocess.run(
        [sys.executable, "-m", "mta_sts_policyd", "check", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures here")
    options = parser.parse_args()
    ca = trustme.CA()
    https_port = free_port(list(HTTPS))
    with tempfile.TemporaryDirectory() as tmp, DnsServer(record_queries=False) as dns:
        build_dns(dns, options.domains)
        servers = [HttpsServer(ca, a, port=https_port, site_callback=site_for) for a in HTTPS]
        for server in servers:
            server.start()
        certs = servers[0].certs
        for i in range(options.domains):  # mint every certificate before the clock starts
            name = f"mta-sts.{domain(i)}"
            for server in servers:
                server.certs.context("valid", (name,))
        listing = Path(tmp) / "domains.txt"
        listing.write_text("".join(f"{domain(i)}\n" for i in range(options.domains)))
        results = []
        with SmtpThread(certs) as smtp:
            base = [
                "--allow-private",
                "--nameserver",
                dns.nameserver,
                "--ca-file",
                servers[0].ca_pem_path,
                "--https-port",
                str(https_port),
                "--smtp-port",
                str(smtp.port),
                "--from-file",
                str(listing),
            ]
            for concurrency in options.concurrency:
                own = resource.getrusage(resource.RUSAGE_SELF)
                runs = [
                    run_check([*base, "--concurrency", str(concurrency)])
                    for _ in range(options.repeat)
                ]
                after = resource.getrusage(resource.RUSAGE_SELF)
                fixture_cpu = (after.ru_utime - own.ru_utime) + (after.ru_stime - own.ru_stime)
                statuses = sorted({d["status"] for _w, _c, r in runs for d in r["domains"]})
                row = {
                    "domains": options.domains,
                    "concurrency": concurrency,
                    "wall_seconds": [round(w, 3) for w, _c, _r in runs],
                    "median_wall_seconds": round(statistics.median(w for w, _c, _r in runs), 3),
                    "cpu_seconds": [round(c, 3) for _w, c, _r in runs],
                    "fixture_cpu_seconds_per_run": round(fixture_cpu / options.repeat, 3),
                    "findings": sum(len(d["findings"]) for _w, _c, r in runs for d in r["domains"]),
                    "domain_statuses": statuses,
                }
                results.append(row)
                print(json.dumps(row), flush=True)
        for server in servers:
            server.close()
    if options.json:
        options.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
