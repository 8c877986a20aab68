"""Loopback report receivers: aiosmtpd SMTP sink and a trustme HTTPS endpoint recording POSTs."""

from __future__ import annotations

import base64
import http.server
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class SmtpSink:
    """aiosmtpd handler: records envelopes; `reply` lets tests refuse with 4xx/5xx."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    reply: str = "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply.startswith("250"):
            self.messages.append(
                (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return self.reply


class SmtpReceiver:
    def __init__(self) -> None:
        self.sink = SmtpSink()
        with socket.socket() as probe:  # Controller cannot bind port 0 itself
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=free)

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes


class HttpsReceiver:
    """`mode`: "200", "201", "500" or "hang" (answers only after `hang_seconds`)."""

    def __init__(self, ca: trustme.CA) -> None:
        self.mode = "200"
        self.hang_seconds = 3.0
        self.posts: list[Post] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.posts.append(
                    Post(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                if owner.mode == "hang":
                    time.sleep(owner.hang_seconds)
                status = int(owner.mode) if owner.mode.isdigit() else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HttpsReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str = "/tlsrpt") -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}{path}"


@dataclass(frozen=True)
class DkimKey:
    pem: bytes
    txt: bytes
    """The selector's TXT record (`s=tlsrpt`, RFC 8460 §3; docs/conformance.md: RPT-3-dkim)."""

    def dnsfunc(self, selector: str, domain: str) -> Any:
        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            return self.txt if name == f"{selector}._domainkey.{domain}.".encode() else None

        return lookup


def make_dkim_key(service: str = "tlsrpt") -> DkimKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    s_tag = f"s={service}; " if service else ""
    return DkimKey(pem, f"v=DKIM1; k=rsa; {s_tag}p={base64.b64encode(der).decode()}".encode())
