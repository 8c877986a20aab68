"""The plain-HTTP listener for ACME http-01 (RFC 8555 §8.3), only when the operator chose it.

It answers `GET /.well-known/acme-challenge/TOKEN` with the key authorization while that
token's challenge is open, and only for the name the token was issued for (the `Host`
header, port stripped). Everything else is 404, never a redirect to HTTPS: the policy itself
is served over HTTPS only (RFC 8461 §3.3), and a redirect would only invite a sender to try.
The same request-size limits and keep-alive timeout as the HTTPS side apply (`server.start`).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"

HttpAnswer = Callable[[str, str], str | None]
"""(name, token) -> the key authorization while that challenge is open, else None."""


def make_challenge_app(answer: HttpAnswer) -> web.Application:
    async def challenge(request: web.Request) -> web.StreamResponse:
        name = (request.url.host or "").lower().rstrip(".")
        body = answer(name, request.match_info["token"])
        if body is None:
            return _not_found()
        return web.Response(body=body.encode("ascii"), content_type="application/octet-stream")

    async def anything_else(request: web.Request) -> web.StreamResponse:
        return _not_found()

    app = web.Application(client_max_size=1024)
    app.router.add_get(CHALLENGE_PREFIX + "{token:[A-Za-z0-9_-]+}", challenge)
    app.router.add_route("*", "/{tail:.*}", anything_else)
    return app


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n", content_type="text/plain")
