"""HTTPS for the policy host on aiohttp (no hand-written HTTP parsing).

Only `GET` and `HEAD` of `/.well-known/mta-sts.txt` on a host it serves answer 200
(`text/plain`, the file's bytes); everything else is 404, never a redirect (RFC 8461 §3.3: a
sender does not follow one). The certificate is chosen by SNI. A name the host has no
certificate for is refused in the handshake (`unrecognized_name`; asyncio closes the
connection without flushing the alert) and never sees a certificate: answering with
a default certificate would show one customer's name to whoever asks for another's, and a
sender treats both outcomes alike (no valid policy). Request line and header sizes are capped;
keep-alive connections close after an idle timeout.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from mta_sts_policyd.host.certificates import CertificateSet, server_context
from mta_sts_policyd.host.client_hello import CLIENT_HELLO, offers_alpn
from mta_sts_policyd.host.documents import PolicyDocuments
from mta_sts_policyd.host.report_intake import ReportEndpoint

log = logging.getLogger(__name__)

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_LINE = 4096
MAX_HEADER = 8192
KEEPALIVE_TIMEOUT = 15.0

ChallengeLookup = Callable[[str], ssl.SSLContext | None]
"""Server name -> the TLS context answering a pending ACME tls-alpn-01 challenge, if any."""
ACME_TLS_ALPN = b"acme-tls/1"
_OFFERS_ACME = "mta_sts_policyd_offers_acme"
"""Attribute set on a handshake's SSLObject when its ClientHello offers ALPN acme-tls/1."""


def make_app(
    documents: PolicyDocuments, reports: tuple[str, ReportEndpoint] | None = None
) -> web.Application:
    """The routes; `reports` (path, endpoint) adds the POST intake of TLS reports."""

    async def policy(request: web.Request) -> web.StreamResponse:
        body = documents.get(request.url.host or "")
        if request.path != POLICY_PATH or body is None:
            return _not_found()
        response = web.Response(body=body, content_type="text/plain", charset="utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def anything_else(request: web.Request) -> web.StreamResponse:
        return _not_found()

    app = web.Application(client_max_size=MAX_HEADER)
    app.router.add_get(POLICY_PATH, policy)  # and HEAD, from the same handler
    if reports is not None:
        app.router.add_post(reports[0], reports[1].handle)
    app.router.add_route("*", "/{tail:.*}", anything_else)
    return app


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n", content_type="text/plain")


def tls_context(
    certificates: CertificateSet, challenges: ChallengeLookup | None = None
) -> ssl.SSLContext:
    """The listening context: picks the name's certificate by SNI, or the validation
    certificate of a pending ACME challenge, but only for a ClientHello offering acme-tls/1
    (RFC 8737 §3): a sender fetching the policy during a renewal gets the real certificate."""
    context = server_context()

    def on_hello(sock: Any, direction: str, _v: Any, _t: Any, kind: Any, data: bytes) -> None:
        if direction == "read" and kind == CLIENT_HELLO:
            setattr(sock, _OFFERS_ACME, offers_alpn(data, ACME_TLS_ALPN))

    def on_sni(sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        name = (server_name or "").lower()
        chosen = None
        if challenges is not None and getattr(sock, _OFFERS_ACME, False):
            chosen = challenges(name)
        chosen = chosen or certificates.context_for(name)
        if chosen is None:
            log.debug("event=tls-unknown-name name=%r", name)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = chosen
        return None

    context.sni_callback = on_sni
    if challenges is not None:
        setattr(context, "_msg_callback", on_hello)  # noqa: B010 (not in typeshed)
    return context


async def start(
    app: web.Application,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    keepalive_timeout: float = KEEPALIVE_TIMEOUT,
) -> web.AppRunner:
    """One listener with the request-size limits and keep-alive idle timeout; `context` None:
    plain HTTP (the http-01 challenge listener)."""
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=keepalive_timeout,
        max_line_size=MAX_LINE,
        max_field_size=MAX_HEADER,
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context, backlog=512)
    await site.start()
    scheme = "https" if context is not None else "http"
    log.info("event=host-listening address=%s:%d scheme=%s", host, port, scheme)
    return runner
