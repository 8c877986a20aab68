"""A fleet on loopback: one shared redis-server (or a Sentinel set-up), the loopback DNS server,
an HTTPS policy host that counts requests per domain, and N real `mta-sts-policyd serve`
processes, each with its own state directory, socketmap port and metrics port, all with
`[fleet]` pointing at the shared Redis.

The multi-process tests (tests/fleet/test_fleet_processes.py) and the fleet benchmark
(bench/fleet.py) use it. Clients: `ask_many` sends many first lookups at once (asyncio, one
connection each), `SteadyLoad` keeps every daemon busy with known domains from threads and
records each answer and its latency. `metric(i, name)` scrapes daemon i's metrics endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

from mta_sts_policyd.postfix.client import SocketmapClient
from mta_sts_policyd.postfix.socketmap import MAX_REPLY, NetstringDecoder, encode_netstring
from support.daemon_process import DaemonProcess, merge
from support.dns_server import DnsServer
from support.https_server import HttpsServer
from support.ports import free_port
from support.redis_server import RedisServer, SentinelSetup

ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.{domain}\nmax_age: 86400\n"

FLEET_DEFAULTS: dict[str, Any] = {
    "key_prefix": "fleet-test",
    "connect_timeout": 1.0,
    "command_timeout": 1.0,
    "breaker_failures": 3,
    "breaker_reset": 1.0,
    "heartbeat_interval": 1.0,
    "revalidate_interval": 2.0,
    "fetch_lock": 10.0,
}
"""Short timings so outages and recoveries fit in a test. The call timeout is a second, not
the default 0.25 s: eight daemons and a loaded CI machine on two cores starve event loops for
longer than that, and a breaker opened by a late wake-up sends a node to fetch on its own."""


MakeFleet = Callable[..., "FleetWorld"]
"""The `make_fleet` fixture (tests/conftest.py): make_fleet(nodes, **FleetWorld options)."""


def enforce_reply(domain: str) -> bytes:
    return f"OK secure match=mail.{domain} servername=hostname".encode()


class FleetWorld:
    """Use as a context manager: servers up on enter, every process stopped on exit."""

    def __init__(
        self,
        root: Path,
        ca: trustme.CA,
        nodes: int,
        *,
        fleet: Mapping[str, Any] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        sentinel: bool = False,
    ) -> None:
        self.root = root
        self.dns = DnsServer()
        self.https = HttpsServer(ca)
        self.sentinel: SentinelSetup | None = None
        self.redis: RedisServer
        self.node_count = nodes
        self.fleet_settings = {**FLEET_DEFAULTS, **(fleet or {})}
        self.extra_settings = settings or {}
        self.use_sentinel = sentinel
        self.daemons: list[DaemonProcess] = []
        self.metrics_ports: list[int] = []

    # ----- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> FleetWorld:
        self.dns.start()
        self.https.start()
        if self.use_sentinel:
            self.sentinel = SentinelSetup(self.root / "sentinel")
            self.redis = self.sentinel.master
            where: dict[str, Any] = {
                "sentinels": self.sentinel.sentinels,
                "service": SentinelSetup.SERVICE,
            }
        else:
            self.redis = RedisServer(self.root / "redis")
            where = {"redis": self.redis.url}
        for n in range(self.node_count):
            fleet = {**self.fleet_settings, **where, "node_name": f"node{n}"}
            metrics_port = free_port()
            base = {
                "fleet": fleet,
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "cache": {"cold_wait": 5.0},
            }
            daemon = DaemonProcess.for_servers(
                self.dns, self.https, merge(base, self.extra_settings)
            )
            self.daemons.append(daemon)
            self.metrics_ports.append(metrics_port)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def warm(self, domains: Sequence[str]) -> None:
        """Every daemon learns every domain (asked once each, all at once)."""
        keys = [d for d in domains for _ in self.daemons]
        for reply, _ in ask_many(self.addresses, keys):
            assert reply.startswith(b"OK secure"), reply

    def wait_breakers(self, open_: bool, timeout: float = 20.0) -> bool:
        """Until every daemon's breaker metric says open (or closed)."""
        want = 1.0 if open_ else 0.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.metric(n, "fleet_breaker_open") == want for n in range(len(self.daemons))):
                return True
            time.sleep(0.1)
        return False

    def start(self, timeout: float = 30.0) -> None:
        """Start every daemon at once, then wait until each is ready."""
        for daemon in self.daemons:
            daemon.start(wait=False)
        for daemon in self.daemons:
            daemon.wait_for_log("event=ready", timeout=timeout)

    def close(self) -> None:
        for daemon in self.daemons:
            with contextlib.suppress(Exception):
                if daemon.proc is not None and daemon.proc.poll() is None:
                    daemon.stop()
            daemon.close()
        if self.sentinel is not None:
            self.sentinel.stop()
        elif hasattr(self, "redis"):
            self.redis.stop()
        self.https.close()
        self.dns.close()

    @property
    def addresses(self) -> list[str]:
        return [d.address for d in self.daemons]

    # ----- the world -----------------------------------------------------------------------
    def publish(self, domain: str, policy_id: str = "1", policy: str | None = None) -> None:
        """An enforce policy for `domain` (MX mail.DOMAIN) with TXT id `policy_id`."""
        self.dns.set_txt(f"_mta-sts.{domain}", f"v=STSv1; id={policy_id}")
        self.dns.set_a(f"mta-sts.{domain}", "127.0.0.1")
        body = policy if policy is not None else ENFORCE.format(domain=domain)
        self.https.set_policy(domain, body)

    def fetches(self, domain: str) -> int:
        """HTTPS requests the policy host served for `domain`."""
        return self.https.request_count(f"mta-sts.{domain}")

    # ----- observation ---------------------------------------------------------------------
    def scrape(self, index: int) -> dict[str, float]:
        """Daemon `index`'s metrics endpoint as {"name{labels}": value}."""
        port = self.metrics_ports[index]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def metric(self, index: int, name: str) -> float:
        """One series (full name with labels, without the `mta_sts_policyd_` prefix); 0 if
        absent."""
        return self.scrape(index).get(f"mta_sts_policyd_{name}", 0.0)

    def logs(self) -> str:
        return "\n".join(
            f"=== node{n} ===\n{d.log(since_start=False)}" for n, d in enumerate(self.daemons)
        )


# ----- clients ---------------------------------------------------------------------------------


async def _ask(address: str, key: str, limit: float) -> tuple[bytes, float]:
    host, _, port = address.rpartition(":")
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(encode_netstring(f"postfix {key}".encode()))
        decoder = NetstringDecoder(max_length=MAX_REPLY)
        async with asyncio.timeout(limit):
            while True:
                data = await reader.read(65536)
                if not data:
                    return b"CLOSED", time.monotonic() - started
                replies = decoder.feed(data)
                if replies:
                    return replies[0], time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def ask_many(
    addresses: Sequence[str], keys: Sequence[str], timeout: float = 20.0
) -> list[tuple[bytes, float]]:
    """Send `keys[i]` to `addresses[i % len(addresses)]`, all at the same moment, one fresh
    connection each; returns (reply, seconds) in order."""

    async def go() -> list[tuple[bytes, float]]:
        tasks = [_ask(addresses[i % len(addresses)], key, timeout) for i, key in enumerate(keys)]
        return list(await asyncio.gather(*tasks))

    return asyncio.run(go())


@dataclass
class LoadResult:
    replies: Counter[bytes] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    wrong: list[tuple[str, bytes]] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def answers(self) -> int:
        return sum(self.replies.values())


class SteadyLoad:
    """One thread per daemon, one connection each, asking for `domains` in turn (`pause`
    seconds between requests) until stopped; every reply must be one of `expected[domain]`."""

    def __init__(
        self,
        addresses: Sequence[str],
        domains: Sequence[str],
        expected: Mapping[str, Collection[bytes]],
        pause: float = 0.005,
    ) -> None:
        self.addresses = list(addresses)
        self.domains = list(domains)
        self.expected = dict(expected)
        self.pause = pause
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(a, n), daemon=True)
            for n, a in enumerate(self.addresses)
        ]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        return self.result

    def snapshot(self) -> tuple[int, int]:
        """(answers, wrong answers) so far."""
        with self._lock:
            return self.result.answers, len(self.result.wrong)

    def _run(self, address: str, offset: int) -> None:
        client: SocketmapClient | None = None
        n = offset
        while not self._stop.is_set():
            domain = self.domains[n % len(self.domains)]
            n += 1
            started = time.monotonic()
            try:
                if client is None:
                    client = SocketmapClient(address, timeout=10)
                reply = client.query(domain)
            except Exception:
                if client is not None:
                    client.close()
                client = None
                with self._lock:
                    self.result.errors += 1
                time.sleep(0.05)
                continue
            elapsed = time.monotonic() - started
            with self._lock:
                self.result.replies[reply.split(b" ", 1)[0]] += 1
                self.result.latencies.append(elapsed)
                if reply not in self.expected[domain]:
                    self.result.wrong.append((domain, reply))
            self._stop.wait(self.pause)
        if client is not None:
            client.close()
