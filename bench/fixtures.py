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

import asyncio
import heapq
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import trustme
from tests.support.certs import CertFactory
from tests.support.dns_server import DnsServer, Node, a, txt
from tests.support.https_server import Site

SUFFIX = ".bench.test"
NO_POLICY_PREFIX = "nopol"
"""Domains `nopol*.bench.test` exist but publish no `_mta-sts` record (NXDOMAIN there)."""
DIRECT_PORT = 4443
"""The policy host without the delay relay in front (the relay takes 443 in the rtt scenario)."""
_POLICY_PATH = "/.well-known/mta-sts.txt"
_WIRE_CACHE = 500_000
MAX_AGE = 86400 * 7

T = TypeVar("T")


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
        if name.startswith(f"_mta-sts.{NO_POLICY_PREFIX}") or name.startswith(
            f"mta-sts.{NO_POLICY_PREFIX}"
        ):
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
    """The test DNS server on a fixed port, answering repeated questions from a wire cache.

    A benchmark asks the same few question shapes hundreds of thousands of times; building each
    reply through dnspython cost the fixture ~1 ms of CPU per cold domain on the cores the daemons
    share. The cache key is the query minus its ID (flags, question and EDNS included) plus the
    TXT generation, so a bumped id is never answered from an old reply.
    """

    def __init__(self, port: int, world: _World) -> None:
        super().__init__(zone_callback=world.zone, record_queries=False)
        self.port = port
        self.world = world
        self._wire: dict[tuple[int, bytes], bytes] = {}
        self._shapes: dict[tuple[object, ...], tuple[bytes, bytes]] = {}
        """(header after the ID, everything after the question) per kind of question."""
        self.rtt = 0.0
        """Seconds every reply waits (the rtt scenario: one round trip per question)."""
        self.delayer = _Delayer()
        self.no_policy_queries = 0

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

    def _handle(
        self,
        data: bytes,
        transport: Literal["udp", "tcp"],
        send: Callable[[bytes], None],
        sync: bool = False,
    ) -> None:
        if NO_POLICY_PREFIX.encode() in data[12:]:
            self.no_policy_queries += 1
        if self.rtt > 0:
            send = self._delayed(send, sync)
        shape = _shape(data)
        if shape is not None:  # a never-seen name answered like others of its kind
            key: tuple[object, ...] = (self.world.generation, *shape)
            question = data[12 : shape[0]]
            cached = self._shapes.get(key)
            if cached is not None:
                send(data[:2] + cached[0] + question + cached[1])
                return
        exact = (self.world.generation, data[2:])
        reply = self._wire.get(exact)
        if reply is not None:
            send(data[:2] + reply)
            return
        replies: list[bytes] = []
        super()._handle(data, transport, replies.append, sync=True)
        if replies:
            if len(self._wire) >= _WIRE_CACHE:
                self._wire.clear()
            reply = replies[0]
            self._wire[exact] = reply[2:]
            if shape is not None and reply[12 : shape[0]] == question:
                self._shapes[key] = (reply[2:12], reply[shape[0] :])
            send(reply)

    def _delayed(self, send: Callable[[bytes], None], sync: bool) -> Callable[[bytes], None]:
        """`send` after one round trip: queued on the delay thread for UDP, a wait in the TCP
        connection's thread. The round trip starts when the question arrived."""
        due = time.monotonic() + self.rtt

        def later(wire: bytes) -> None:
            if sync:
                time.sleep(max(0.0, due - time.monotonic()))
                send(wire)
                return
            self.delayer.at(due, send, wire)

        return later


class Lateness:
    """How late the emulated network delivered (actual time - due time), in ms, for the report:
    a delay emulation that falls behind under load adds queueing the real network would not."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def add(self, late_seconds: float) -> None:
        if len(self.samples) < 200_000:
            self.samples.append(late_seconds * 1000)

    def take(self) -> dict[str, float]:
        values, self.samples = sorted(self.samples), []
        if not values:
            return {"count": 0}

        def pick(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))], 2)

        return {"count": len(values), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1)}


def _shape(data: bytes) -> tuple[int, bytes, tuple[bytes, ...], bool, bytes] | None:
    """For a question about `[prefix.]X.bench.test`: where its question section ends, and what
    its reply depends on besides the name (the query header after the ID, the prefix labels,
    whether X is a no-policy name, the type, class and everything after the question).

    Why: every cold domain is a new name, so the wire cache keyed by the whole query never hit
    and each question cost the fixture a dnspython reply (~0.5 ms, about 2 ms of the fixtures'
    CPU per cold domain, on the cores the daemons use). The replies of this world name the
    question only by a compression pointer (answers) or not at all (the SOA of NODATA is owned
    by the root), so one reply of each kind serves every name of that kind and length (the
    length is part of the key: a compression pointer in the SOA points past the question).
    """
    labels: list[bytes] = []
    at = 12
    try:
        while data[at]:
            if data[at] >= 64:
                return None  # a compression pointer in a query: not ours
            labels.append(data[at + 1 : at + 1 + data[at]].lower())
            at += 1 + data[at]
    except IndexError:
        return None
    end = at + 5  # the root label, type and class
    if len(data) < end or len(labels) < 3 or labels[-2:] != [b"bench", b"test"]:
        return None
    no_policy = labels[-3].startswith(NO_POLICY_PREFIX.encode())
    return end, data[2:12], tuple(labels[:-3]), no_policy, data[end - 4 :]


class _Delayer:
    """One thread that sends delayed DNS replies at their due time (a heap, not a thread each:
    a thread per reply cost more CPU than the reply and fell behind under load)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[bytes], None], bytes]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self.lateness = Lateness()
        threading.Thread(target=self._run, name="bench-dns-delay", daemon=True).start()

    def at(self, due: float, send: Callable[[bytes], None], wire: bytes) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, send, wire))
            if self._heap[0][1] == self._seq:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                due, _, send, wire = heapq.heappop(self._heap)
            self.lateness.add(time.monotonic() - due)
            send(wire)


class _DelayRelay:
    """TCP relay in front of the policy host: every chunk waits half a round trip each way.

    This kernel has no netem, so the delay is added in user space. The client's TCP handshake
    with the relay completes at once on loopback, so the first client chunk is held until one
    whole round trip after the connection was accepted plus the half for its own way: the
    server sees it when it would have after a real SYN/SYN-ACK exchange.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, rtt: float, lateness: Lateness) -> None:
        self.loop = loop
        self.rtt = rtt
        self.lateness = lateness

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = self.loop.time()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", DIRECT_PORT)
        except OSError:
            writer.close()
            return
        half = self.rtt / 2
        first_due = accepted + self.rtt + half
        await asyncio.gather(
            self._pump(reader, up_writer, half, first_due),
            self._pump(up_reader, writer, half, 0.0),
            return_exceptions=True,
        )

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        half: float,
        not_before: float,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:  # comes after the exchange: no answer waits on it, not counted
                    dst.close()
                    return
                self.lateness.add(self.loop.time() - due)
                dst.write(chunk)
                await dst.drain()

        task = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await src.read(65536)
                queue.put_nowait((max(self.loop.time() + half, not_before), chunk))
                if not chunk:
                    break
        except OSError:
            queue.put_nowait((self.loop.time(), b""))
        await task


class _PolicyHost:
    """HTTPS on a fixed port for every `mta-sts.X.bench.test`: one asyncio loop, minimal HTTP/1.1.

    The tests' HTTPS server (a thread and http.server per connection, a certificate minted on
    first contact) cost more CPU per fetch than the daemons under test. Here certificates can be
    minted before a scenario (`prepare`), the handshake and the reply run on one event loop, and
    every connection is closed after one response, as a policy host may do. Counts requests, the
    first/last request time and the peak number of open TLS connections.
    """

    def __init__(self, ca: trustme.CA, port: int, world: _World, workdir: Path) -> None:
        self.port = port
        self.world = world
        self.certs = CertFactory(ca, workdir)
        self.inflight = self.peak = self.total = 0
        self.first = self.last = 0.0
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-https")
        self._thread.daemon = True
        default = self.certs.new_context()
        chain = workdir / "default.pem"
        chain.write_bytes(self.certs.chain_pem("valid", ("localhost",)))
        default.load_cert_chain(chain, workdir / "leaf.key")
        default.sni_callback = self._on_sni
        self._context = default
        self._server = asyncio.run_coroutine_threadsafe(self._listen(self.port), self._loop)
        self._direct = asyncio.run_coroutine_threadsafe(self._listen(DIRECT_PORT), self._loop)

    async def _listen(self, port: int) -> asyncio.Server:
        return await self._loop.create_server(
            lambda: _PolicyConnection(self), "127.0.0.1", port, ssl=self._context, backlog=1024
        )

    def start(self) -> None:
        self._thread.start()
        self._listening: asyncio.Server | None = self._server.result(30)
        self._direct.result(30)

    def set_rtt(self, rtt: float) -> None:
        """rtt > 0: free port 443 for the delay relay (its own process); 0: listen there again."""

        async def swap() -> None:
            if rtt > 0 and self._listening is not None:
                self._listening.close()
                await self._listening.wait_closed()
                self._listening = None
            elif rtt <= 0 and self._listening is None:
                self._listening = await self._listen(self.port)

        asyncio.run_coroutine_threadsafe(swap(), self._loop).result(30)

    def prepare(self, hosts: list[str]) -> None:
        for host in hosts:
            self.certs.context("valid", (host,))

    def _on_sni(self, sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if server_name is None or self.world.site(server_name) is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = self.certs.context("valid", (server_name,))
        return None

    def response(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        fields = (line.partition(":") for line in lines[1:])
        host = next((v.strip() for k, _, v in fields if k.strip().lower() == "host"), "")
        host = host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()
        site = self.world.site(host)
        ok = site is not None and len(parts) == 3 and parts[:2] == ["GET", _POLICY_PATH]
        body = site.body if ok and site is not None else b"not found\n"
        status = "200 OK" if ok else "404 Not Found"
        now = time.monotonic()
        self.total += 1
        self.first = self.first or now
        self.last = now
        return (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body

    def opened(self) -> None:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)

    def closed(self) -> None:
        self.inflight -= 1

    def stats(self) -> dict[str, Any]:
        return self._call(
            lambda: {
                "https_requests": self.total,
                "peak_connections": self.peak,
                "first_request": self.first,
                "last_request": self.last,
            }
        )

    def reset_stats(self) -> None:
        def reset() -> None:
            self.peak, self.total, self.first, self.last = self.inflight, 0, 0.0, 0.0

        self._call(reset)

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop, so counters are read and reset between callbacks."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class _PolicyConnection(asyncio.Protocol):
    """One TLS connection: read the request head, answer, close."""

    def __init__(self, host: _PolicyHost) -> None:
        self.host = host
        self.buffer = b""
        self.transport: Any = None  # uvloop's SSL transport is not an asyncio.Transport subclass

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.host.opened()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        head, found, _ = self.buffer.partition(b"\r\n\r\n")
        if not found:
            if len(self.buffer) > 16384:
                self.transport.close()
            return
        self.transport.write(self.host.response(head))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.host.closed()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@dataclass
class Fixtures:
    """Handle held by the orchestrator: the child process and its command pipe."""

    process: multiprocessing.process.BaseProcess
    pipe: multiprocessing.connection.Connection
    ca_pem: str
    helpers: list[multiprocessing.process.BaseProcess]
    """The DNS and relay processes."""

    def pids(self) -> list[int]:
        return [p.pid or 0 for p in (self.process, *self.helpers)]

    def call(self, command: str) -> Any:
        self.pipe.send(command)
        return self.pipe.recv()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("stats")
        return result

    def reset(self) -> None:
        self.call("reset")

    def prepare(self, domains: list[str]) -> None:
        """Mint the policy hosts' certificates now, outside the measured run."""
        self.pipe.send(("prepare", [f"mta-sts.{d}" for d in domains]))
        self.pipe.recv()

    def set_rtt(self, seconds: float) -> None:
        """Delay DNS replies by `seconds` and relay HTTPS with half of it each way (0: off)."""
        self.pipe.send(("rtt", seconds))
        self.pipe.recv()

    def lateness(self) -> dict[str, Any]:
        """How late the delayed DNS replies and relayed chunks went out since the last call."""
        stats: dict[str, Any] = self.call("lateness")
        return stats

    def no_policy_queries(self) -> int:
        """DNS questions about `nopol*` names since the fixtures started."""
        count: int = self.call("nopol")
        return count

    def bump_generation(self) -> None:
        """Change every TXT id, so that a refresh really refetches (the incumbent checks ids)."""
        self.call("bump")

    def stop(self) -> None:
        self.call("stop")
        for process in (self.process, *self.helpers):
            process.join(5)


def _child(
    pipe: multiprocessing.connection.Connection,
    ca_pem: str,
    cpus: set[int] | None,
    dns_pipe: multiprocessing.connection.Connection,
    relay_pipe: multiprocessing.connection.Connection,
) -> None:
    """The HTTPS policy host; forwards DNS and relay commands to their own processes."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    world = _World()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(ca_pem)
    workdir = Path(tempfile.mkdtemp(prefix="bench-certs-"))
    https = _PolicyHost(ca, 443, world, workdir)
    https.start()
    pipe.send("ready")
    while True:
        command = pipe.recv()
        if isinstance(command, tuple) and command[0] == "prepare":
            https.prepare(command[1])
            pipe.send("ok")
        elif isinstance(command, tuple) and command[0] == "rtt":
            if command[1] > 0:
                https.set_rtt(command[1])  # port 443 free first, then the relay takes it
            _ask(relay_pipe, command)
            if command[1] <= 0:
                https.set_rtt(command[1])
            pipe.send(_ask(dns_pipe, command))
        elif command == "lateness":
            pipe.send({"dns": _ask(dns_pipe, command), "https": _ask(relay_pipe, command)})
        elif command in ("nopol", "bump"):
            pipe.send(_ask(dns_pipe, command))
        elif command == "stats":
            pipe.send(https.stats())
        elif command == "reset":
            https.reset_stats()
            pipe.send("ok")
        elif command == "stop":
            _ask(dns_pipe, command)
            _ask(relay_pipe, command)
            https.close()
            shutil.rmtree(workdir, ignore_errors=True)
            pipe.send("ok")
            return


def _ask(pipe: multiprocessing.connection.Connection, command: Any) -> Any:
    pipe.send(command)
    return pipe.recv()


def _dns_child(pipe: multiprocessing.connection.Connection, cpus: set[int] | None) -> None:
    """DNS in a process of its own: its threads never wait for the HTTPS loop's GIL (a GIL
    shared with the TLS server made delayed replies 10-50 ms late under load)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    world = _World()
    with _Dns(53, world) as dns:
        pipe.send("ready")
        while True:
            command = pipe.recv()
            if isinstance(command, tuple) and command[0] == "rtt":
                dns.rtt = command[1]
                pipe.send("ok")
            elif command == "lateness":
                pipe.send(dns.delayer.lateness.take())
            elif command == "nopol":
                pipe.send(dns.no_policy_queries)
            elif command == "bump":
                world.generation += 1
                pipe.send("ok")
            elif command == "stop":
                pipe.send("ok")
                return


def _relay_child(pipe: multiprocessing.connection.Connection, cpus: set[int] | None) -> None:
    """The delay relay on port 443 (rtt scenario) in a process of its own, on its own loop."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    loop = _new_loop()
    threading.Thread(target=loop.run_forever, name="bench-relay", daemon=True).start()
    lateness = Lateness()
    servers: list[asyncio.Server] = []

    async def set_rtt(rtt: float) -> None:
        while servers:
            server = servers.pop()
            server.close()
            await server.wait_closed()
        if rtt > 0:
            relay = _DelayRelay(loop, rtt, lateness)
            servers.append(await asyncio.start_server(relay.handle, "127.0.0.1", 443, backlog=1024))

    async def take() -> dict[str, float]:
        return lateness.take()

    pipe.send("ready")
    while True:
        command = pipe.recv()
        if isinstance(command, tuple) and command[0] == "rtt":
            asyncio.run_coroutine_threadsafe(set_rtt(command[1]), loop).result(30)
            pipe.send("ok")
        elif command == "lateness":
            pipe.send(asyncio.run_coroutine_threadsafe(take(), loop).result(30))
        elif command == "stop":
            pipe.send("ok")
            return


def start_fixtures(ca_pem: str, cpus: set[int] | None = None) -> Fixtures:
    """Start DNS :53 and HTTPS :443 on 127.0.0.1 (needs root in a private network namespace).

    Three processes: the HTTPS policy host, DNS, and the delay relay of the rtt scenario, so
    that none of them waits for another's GIL (the emulated network stays on time under load).
    """
    ctx = multiprocessing.get_context("fork")
    helpers: list[multiprocessing.process.BaseProcess] = []
    pipes = []
    for target in (_dns_child, _relay_child):
        parent, child = ctx.Pipe()
        helper = ctx.Process(target=target, args=(child, cpus), daemon=True)
        helper.start()
        if not parent.poll(30) or parent.recv() != "ready":
            raise RuntimeError("benchmark fixtures did not start")
        helpers.append(helper)
        pipes.append(parent)
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_child, args=(child, ca_pem, cpus, *pipes), daemon=True)
    process.start()
    if not parent.poll(30) or parent.recv() != "ready":
        raise RuntimeError("benchmark fixtures did not start")
    return Fixtures(process, parent, ca_pem, helpers)
