"""A loopback HTTPS server for policy hosts (`mta-sts.<domain>`), certificates from a trustme CA.

Each host name (SNI and Host) has a `Site`: what to answer (status, type, body, redirect, delay,
slow drip, framing, lies about the length) and which certificate to show (see certs.CertKind).
Every request and every failed handshake is recorded, so tests can assert what a client sent
(SNI, Host, headers) and what it did not (a second request after a redirect).

Threads, not asyncio: the server serves sync and async tests and subprocesses alike, and a
dripping response does not hold up other connections.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

import trustme

from .certs import CertFactory, CertKind

POLICY_PATH = "/.well-known/mta-sts.txt"


@dataclass
class Site:
    """How one host name answers. Mutable on purpose: tests may change it between requests."""

    body: bytes = b""
    status: int = 200
    content_type: str | None = "text/plain"
    headers: Sequence[tuple[str, str]] = ()
    location: str | None = None
    path: str | None = POLICY_PATH
    """Only this path gets the configured answer (others 404); None = every path."""
    delay: float = 0.0
    """Seconds to wait before the status line."""
    drip_interval: float = 0.0
    """> 0: send the body `drip_size` bytes at a time, this many seconds apart (slowloris)."""
    drip_size: int = 1
    stall_after_headers: float = 0.0
    """> 0: after the headers, send nothing (no body, no close_notify, no FIN) for this long,
    reading nothing either, so the client's TLS close waits too."""
    framing: Literal["length", "close", "chunked"] = "length"
    content_length: int | None = None
    """Announce this Content-Length instead of the true one (framing="length" only)."""
    cert: CertKind = "valid"
    cert_names: tuple[str, ...] | None = None
    """Explicit SAN dNSNames (overrides what `cert` would pick), e.g. ("mta*.example.test",)."""


SiteCallback = Callable[[str], Site | None]
"""Called with a lower-case host name not in the site dict (benchmarks with many domains)."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    sni: str | None
    host: str | None
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass(frozen=True, slots=True)
class TlsFailure:
    sni: str | None
    error: str


@dataclass
class _Conn:
    sni: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class HttpsServer:
    """HTTPS on 127.0.0.1 (or another loopback address; OS-chosen port unless `port`); use as a
    context manager."""

    def __init__(
        self,
        ca: trustme.CA,
        host: str = "127.0.0.1",
        *,
        site_callback: SiteCallback | None = None,
        tls_versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
        handshake_timeout: float = 10.0,
        port: int = 0,
    ) -> None:
        self.ca = ca
        self.host = host
        self.requested_port = port
        """0: OS-chosen; else this port (several servers on 127.0.0.x share one port)."""
        self.site_callback = site_callback
        self.handshake_timeout = handshake_timeout
        self.sites: dict[str, Site] = {}
        self.requests: list[HttpRequest] = []
        self.tls_failures: list[TlsFailure] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._conns: dict[int, _Conn] = {}
        self._stopping = threading.Event()
        self._workdir = Path(tempfile.mkdtemp(prefix="test-https-"))
        self.ca_pem_path = str(self._workdir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_pem_path)
        self.certs = CertFactory(ca, self._workdir, tls_versions)
        self._tls = self.certs.new_context()
        self._tls.load_cert_chain(*self._default_chain())  # for clients without SNI
        self._tls.sni_callback = self._on_sni
        self._server: _TcpServer | None = None
        self._thread: threading.Thread | None = None

    # ----- configuration ---------------------------------------------------------------------
    def set_site(self, host: str, site: Site | None = None, **fields: Any) -> Site:
        """Configure `host` with `site` or with Site(**fields); returns the Site for later edits."""
        site = site if site is not None else Site(**fields)
        with self._lock:
            self.sites[host.lower().rstrip(".")] = site
        return site

    def set_policy(self, domain: str, body: bytes | str = b"", **fields: Any) -> Site:
        """Serve `body` as the policy of `domain` at https://mta-sts.<domain>/.well-known/..."""
        raw = body.encode() if isinstance(body, str) else body
        return self.set_site(f"mta-sts.{domain}", body=raw, **fields)

    def remove_site(self, host: str) -> None:
        with self._lock:
            self.sites.pop(host.lower().rstrip("."), None)

    def site_for(self, host: str) -> Site | None:
        key = host.lower().rstrip(".")
        with self._lock:
            site = self.sites.get(key)
        if site is None and self.site_callback is not None:
            site = self.site_callback(key)
        return site

    # ----- observation -----------------------------------------------------------------------
    def request_count(self, host: str) -> int:
        with self._lock:
            return self._counts[host.lower()]

    def requests_for(self, host: str) -> list[HttpRequest]:
        with self._lock:
            return [r for r in self.requests if (r.host or r.sni or "").lower() == host.lower()]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.tls_failures.clear()
            self._counts.clear()

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("HttpsServer is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    # ----- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> HttpsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self._server = _TcpServer(self, (self.host, self.requested_port))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        shutil.rmtree(self._workdir, ignore_errors=True)

    # ----- TLS -------------------------------------------------------------------------------
    def _default_chain(self) -> tuple[str, str]:
        path = self._workdir / "default.pem"
        path.write_bytes(self.certs.chain_pem("valid", ("localhost",)))
        return str(path), str(self._workdir / "leaf.key")

    def _on_sni(self, sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        with self._lock:
            conn = self._conns.get(id(sock))
        if conn is not None:
            conn.sni = server_name
        if server_name is None:
            return None
        site = self.site_for(server_name)
        if site is None or site.cert == "none":
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        names = site.cert_names or self.certs.names_for(site.cert, server_name)
        sock.context = self.certs.context(site.cert, names)
        return None

    def _finish(self, raw: socket.socket, client_address: Any) -> None:
        """Runs in the connection's thread: TLS handshake, then one HTTP exchange."""
        raw.settimeout(self.handshake_timeout)
        sock = self._tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        conn = _Conn()
        with self._lock:
            self._conns[id(sock)] = conn
        try:
            sock.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self.tls_failures.append(TlsFailure(conn.sni, f"{type(exc).__name__}: {exc}"))
            sock.close()
            return
        finally:
            with self._lock:
                self._conns.pop(id(sock), None)
        try:
            _Handler(sock, client_address, self._server, conn.sni)  # type: ignore[arg-type]
        finally:
            with contextlib.suppress(OSError, ValueError):
                sock.settimeout(1)
                sock.unwrap()  # close_notify, so "close"-framed bodies end cleanly
            sock.close()

    # ----- HTTP ------------------------------------------------------------------------------
    def _serve(self, handler: _Handler) -> None:
        host = (handler.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower() or None
        request = HttpRequest(
            sni=handler.sni,
            host=host,
            method=handler.command,
            path=handler.path,
            headers=tuple(handler.headers.items()),
        )
        key = host or handler.sni or ""
        with self._lock:
            self.requests.append(request)
            self._counts[key] += 1
        site = self.site_for(key)
        if site is None or (site.path is not None and handler.path != site.path):
            site = Site(status=404, body=b"not found\n", path=None)
        self._respond(handler, site)

    def _respond(self, handler: _Handler, site: Site) -> None:
        if site.delay and self._stopping.wait(site.delay):
            return
        handler.send_response(site.status)
        if site.content_type is not None:
            handler.send_header("Content-Type", site.content_type)
        if site.location is not None:
            handler.send_header("Location", site.location)
        for name, value in site.headers:
            handler.send_header(name, value)
        if site.framing == "length":
            length = site.content_length if site.content_length is not None else len(site.body)
            handler.send_header("Content-Length", str(length))
        elif site.framing == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        if site.stall_after_headers > 0:
            handler.wfile.flush()
            self._stopping.wait(site.stall_after_headers)
            return
        if handler.command != "HEAD":
            self._send_body(handler, site)

    def _send_body(self, handler: _Handler, site: Site) -> None:
        step = site.drip_size if site.drip_interval > 0 else max(len(site.body), 1)
        try:
            for start in range(0, len(site.body), step):
                if site.drip_interval > 0 and self._stopping.wait(site.drip_interval):
                    return
                chunk = site.body[start : start + step]
                if site.framing == "chunked":
                    chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
                handler.wfile.write(chunk)
                handler.wfile.flush()
            if site.framing == "chunked":
                handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _TcpServer

    def __init__(self, sock: ssl.SSLSocket, addr: Any, server: _TcpServer, sni: str | None):
        self.sni = sni
        super().__init__(sock, addr, server)

    def do_GET(self) -> None:
        self.server.owner._serve(self)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `HttpsServer.requests` instead."""


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, owner: HttpsServer, address: tuple[str, int]) -> None:
        self.owner = owner
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)  # type: ignore[arg-type]

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.owner._finish(request, client_address)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `predicate` until true or `timeout` (for asserting on server-side records)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
