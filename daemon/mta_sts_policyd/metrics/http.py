"""The metrics exposition endpoint: prometheus-client's handler on a loopback-only HTTP server.

Loopback only because the metrics name no domains but still describe the mail flow; an operator
who wants them elsewhere puts a scraper or proxy on the host.
"""

from __future__ import annotations

import ipaddress
import threading
from http.server import ThreadingHTTPServer
from socket import AF_INET6

from prometheus_client import CollectorRegistry, MetricsHandler


class MetricsServer:
    """A running exposition endpoint (HTTP, any path); `close()` stops it."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.host, self.port = str(server.server_address[0]), int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def loopback_host(host: str, *, allow_remote: bool = False) -> str:
    """The IP to bind for `host`; a non-loopback address only with `allow_remote` (the
    operator's explicit opt-in, `metrics.allow_remote`: the endpoint has no authentication)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise ValueError(f"metrics listener must be a loopback IP address, got {host!r}") from None
    if not address.is_loopback and not allow_remote:
        raise ValueError(f"metrics listener must be a loopback address, got {host!r}")
    return str(address)


class _Server4(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server4):
    address_family = AF_INET6


def serve_registry(
    host: str, port: int, registry: CollectorRegistry, *, allow_remote: bool = False
) -> MetricsServer:
    """Serve `registry` from a daemon thread; loopback only unless `allow_remote`."""
    bind = loopback_host(host, allow_remote=allow_remote)
    server_class = _Server6 if ":" in bind else _Server4
    return MetricsServer(server_class((bind, port), MetricsHandler.factory(registry)))
