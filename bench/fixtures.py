"""The benchmark's policy world: DNS on 127.0.0.1:53 and HTTPS on 127.0.0.1:443, in a child process.

Fixed ports because the incumbent reads the system resolver configuration and fetches from port
443; the whole benchmark runs in a private network namespace, so nothing else is reachable and
nothing else is disturbed. Every name under `bench.test` exists: `_mta-sts.X.bench.test` has an
STSv1 TXT record whose id is the current generation (bumped to force refreshes), and
`mta-sts.X.bench.test` resolves to 127.0.0.1 and serves an enforce policy for X.

The child process keeps the fixture's CPU out of the orchestrator's GIL; it counts HTTPS
requests and the peak number of connections open at once (the fetch concurrency a daemon uses).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import trustme
from tests.support.dns_server import DnsServer, Node, a, txt
from tests.support.https_server import HttpsServer, Site, _TcpServer

SUFFIX = ".bench.test"
MAX_AGE = 86400 * 7


def policy_body(domain: str) -> bytes:
    return (
        f"version: STSv1\nmode: enforce\nmx: mx1.{domain}\nmx: mx2.{domain}\nmax_age: {MAX_AGE}\n"
    ).encode()


class _World:
    """Shared state of the DNS and HTTPS halves."""

    def __init__(self) -> None:
        self.generation = 1

    def zone(self, name: str) -> Node | None:
        if not name.endswith(SUFFIX):
            return None
        if name.startswith("_mta-sts."):
            return [txt(f"v=STSv1; id=gen{self.generation};", ttl=60)]
        if name.startswith("mta-sts."):
            return [a("127.0.0.1")]
        return []

    def site(self, host: str) -> Site | None:
        if not (host.startswith("mta-sts.") and host.endswith(SUFFIX)):
            return None
        return Site(body=policy_body(host[len("mta-sts.") :]))


class _Dns(DnsServer):
    def __init__(self, port: int, world: _World) -> None:
        super().__init__(zone_callback=world.zone, record_queries=False)
        self.port = port

    def start(self) -> None:
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._udp.bind((self.host, self.port))
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind((self.host, self.port))
        self._tcp.listen(128)
        self._thread = threading.Thread(target=self._serve, name="bench-dns", daemon=True)
        self._thread.start()


class _Https(HttpsServer):
    """HttpsServer on a fixed port that tracks connection concurrency and request times."""

    def __init__(self, ca: trustme.CA, port: int, world: _World) -> None:
        super().__init__(ca, site_callback=world.site)
        self.fixed_port = port
        self.inflight = 0
        self.peak = 0
        self.total = 0
        self.first = 0.0
        self.last = 0.0
        self._gauge = threading.Lock()

    def start(self) -> None:
        self._server = _TcpServer(self, (self.host, self.fixed_port))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _finish(self, raw: socket.socket, client_address: Any) -> None:
        with self._gauge:
            self.inflight += 1
            self.peak = max(self.peak, self.inflight)
        raw.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )  # no 40 ms Nagle/delayed-ACK stall
        try:
            super()._finish(raw, client_address)
        finally:
            with self._gauge:
                self.inflight -= 1

    def _serve(self, handler: Any) -> None:
        now = time.monotonic()
        with self._gauge:
            self.total += 1
            self.first = self.first or now
            self.last = now
        super()._serve(handler)
        with self._lock:
            self.requests.clear()  # keep memory flat over 100k fetches; counts stay

    def stats(self) -> dict[str, Any]:
        with self._gauge:
            return {
                "https_requests": self.total,
                "peak_connections": self.peak,
                "first_request": self.first,
                "last_request": self.last,
            }

    def reset_stats(self) -> None:
        with self._gauge:
            self.peak, self.total, self.first, self.last = self.inflight, 0, 0.0, 0.0
        self.reset()


@dataclass
class Fixtures:
    """Handle held by the orchestrator: the child process and its command pipe."""

    process: multiprocessing.Process
    pipe: multiprocessing.connection.Connection
    ca_pem: str

    def call(self, command: str) -> Any:
        self.pipe.send(command)
        return self.pipe.recv()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("stats")
        return result

    def reset(self) -> None:
        self.call("reset")

    def bump_generation(self) -> None:
        """Change every TXT id, so that a refresh really refetches (the incumbent checks ids)."""
        self.call("bump")

    def stop(self) -> None:
        self.call("stop")
        self.process.join(5)


def _child(pipe: multiprocessing.connection.Connection, ca_pem: str, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    world = _World()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(ca_pem)
    with _Dns(53, world) as _dns, _Https(ca, 443, world) as https:
        pipe.send("ready")
        while True:
            command = pipe.recv()
            if command == "stats":
                pipe.send(https.stats())
            elif command == "reset":
                https.reset_stats()
                pipe.send("ok")
            elif command == "bump":
                world.generation += 1
                pipe.send("ok")
            elif command == "stop":
                pipe.send("ok")
                return


def start_fixtures(ca_pem: str, cpus: set[int] | None = None) -> Fixtures:
    """Start DNS :53 and HTTPS :443 on 127.0.0.1 (needs root in a private network namespace)."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_child, args=(child, ca_pem, cpus), daemon=True)
    process.start()
    if not parent.poll(30) or parent.recv() != "ready":
        raise RuntimeError("benchmark fixtures did not start")
    return Fixtures(process, parent, ca_pem)
