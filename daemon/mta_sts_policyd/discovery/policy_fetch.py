"""The HTTPS half of discovery: fetch and validate `https://mta-sts.<domain>/.well-known/mta-sts.txt`.

RFC 8461 §3.2/§3.3/§7 limits, all enforced here: Web-PKI certificate for the policy host by
DNS-ID only (no CN fallback), SNI, TLS >= 1.2, status 200 only, no redirects, no HTTP caching,
`text/plain`, at most 64 KiB (counted while streaming) and one deadline for the whole exchange
(slow-drip servers cannot stretch it). The policy host is resolved by the daemon's own resolver
(http_transport.py's backend), so tests and operators' `nameservers` apply to it too; the fetch
reads its one GET with h11 (one_get.py), `check`'s per-address exchange goes through httpx.
httpx, httpcore, h11 and ssl exceptions are translated to PolicyFetchError here and nowhere else.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

import h11
import httpcore
import httpx

from mta_sts_policyd.discovery.address_attempts import AddressAttempts, Attempt
from mta_sts_policyd.discovery.http_rules import (
    MAX_BODY,
    content_type_problem,
    redirect_problem,
    status_problem,
)
from mta_sts_policyd.discovery.http_transport import PoolTransport, ResolvingBackend
from mta_sts_policyd.discovery.one_get import OneGet
from mta_sts_policyd.errors import (
    PolicyFetchError,
    PolicySyntaxError,
    ResultType,
)
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.net.https_stream import AsyncNetworkStream
from mta_sts_policyd.net.tls import client_context
from mta_sts_policyd.sts import Policy, parse_policy

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_TIMEOUT = 60.0
"""RFC 8461 §3.3 suggests one minute; longer configured timeouts are capped."""
_MAX_CONNECTIONS = 256
_MAX_ADDRESSES = 4
"""Addresses of one policy host a fetch tries; each also gets a quarter of the deadline alone
before the next one is tried beside it, if it stays silent."""
_FETCH_ERROR = ResultType.STS_POLICY_FETCH_ERROR
_INVALID = ResultType.STS_POLICY_INVALID
_WEBPKI = ResultType.STS_WEBPKI_INVALID

_E = TypeVar("_E", bound=BaseException)
_NETWORK_ERRORS = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.StreamError,
    httpcore.ConnectionNotAvailable,
    httpcore.UnsupportedProtocol,
    httpcore.ProtocolError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    h11.ProtocolError,
    OSError,  # includes ssl.SSLError
)


@dataclass(frozen=True)
class Exchange:
    """One unvalidated answer from one address of a policy host (for `check`).

    The body holds at most MAX_BODY + 1 bytes: `oversize` says reading stopped there.
    """

    address: str
    status: int
    headers: dict[str, str]
    """Lower-case names; the first value of a repeated header."""
    body: bytes
    oversize: bool
    tls_version: str | None


@dataclass(frozen=True)
class FetchResult:
    """A policy that passed every check, with what the server sent (for reports and `check`)."""

    policy: Policy
    body: bytes
    status: int
    content_type: str
    url: str


class PolicyFetcher:
    """One httpx client for the daemon; no connection reuse (every policy host differs)."""

    def __init__(
        self,
        dns_client: DnsClient,
        *,
        timeout: float,
        ca_file: str | None,
        https_port: int,
        user_agent: str,
    ) -> None:
        self.timeout = min(timeout, MAX_TIMEOUT)
        self._port = https_port
        self._backend = ResolvingBackend(dns_client, https_port)
        self._tls = tls = client_context(ca_file=ca_file)  # RFC 8461 §3.3: TLS >= 1.2, DNS-ID only
        tls.set_alpn_protocols(["http/1.1"])  # as httpcore offers it (it sets this on first use)
        self._pool = pool = httpcore.AsyncConnectionPool(
            ssl_context=tls,
            max_connections=_MAX_CONNECTIONS,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=self._backend,
        )
        self._client = httpx.AsyncClient(
            transport=PoolTransport(pool),
            follow_redirects=False,
            # No per-step timeouts: `fetch` and `exchange` put one deadline around the whole
            # exchange (same length, started first, so a per-step timer could never fire first;
            # each still cost a timer per read and write).
            timeout=httpx.Timeout(None),
            trust_env=False,
            headers=dict(_request_headers(user_agent)),
        )
        self._headers = [(k.encode(), v.encode()) for k, v in _request_headers(user_agent)]

    async def aclose(self) -> None:
        await self._client.aclose()

    def prefetch_host(self, domain: str) -> None:
        """Ask for the policy host's IPv4 addresses now (a fetch of `domain` will likely follow)."""
        self._backend.prefetch(f"mta-sts.{domain}")

    def discard_host(self, domain: str) -> None:
        """No fetch of `domain` follows after all."""
        self._backend.discard(f"mta-sts.{domain}")

    async def fetch(self, domain: str) -> FetchResult:
        """GET and validate the policy of A-label `domain`; PolicyFetchError on failure.

        An address that answers badly (the connection reset, a certificate or TLS failure, an
        HTTP or policy error) does not end the fetch while the host has others, and one that
        stays silent after connecting gets another address tried next to it: up to
        `_MAX_ADDRESSES`, all within the one deadline (address_attempts.py). A dual-stack host
        with a broken server behind one family, or a pool with one stale member, still gives
        its policy. When none does, the error is the first address's, naming the others'.
        """
        host = f"mta-sts.{domain}"
        url = f"https://{host}{POLICY_PATH}"

        async def one_try(exclude: Collection[str], attempt: Attempt) -> FetchResult:
            stream = await self._backend.connect_tcp(host, self._port, exclude=exclude)
            attempt.mark_connected(_peer_address(stream))
            status, content_type, body = await self._get(stream, url)
            return FetchResult(_parse(body), body, status, content_type, url)

        attempts = AddressAttempts(
            one_try,
            lambda exc: _fetch_error(host, url, exc),
            limit=_MAX_ADDRESSES,
            stall_after=self.timeout / _MAX_ADDRESSES,
        )
        try:
            async with asyncio.timeout(self.timeout):
                return await attempts.run()
        except TimeoutError:
            raise attempts.late(f"{url}: no complete answer within {self.timeout:g} s") from None

    async def exchange(self, domain: str, address: str) -> Exchange:
        """GET the policy URL of A-label `domain` from one `address` (SNI and Host: the policy
        host), with the sender's TLS context, deadline, size cap and no redirects, but without
        judging status, type or body; PolicyFetchError when no HTTP answer came.
        """
        host = f"mta-sts.{domain}"
        literal = f"[{address}]" if ":" in address else address
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(f"https://{literal}{POLICY_PATH}", host, address)
        except TimeoutError:
            raise PolicyFetchError(
                f"{address}: no complete answer within {self.timeout:g} s"
            ) from None
        except _NETWORK_ERRORS as exc:
            raise _classify(host, f"https://{host}{POLICY_PATH} at {address}", exc) from None

    async def _exchange(self, url: str, host: str, address: str) -> Exchange:
        extensions = {"sni_hostname": host}
        async with self._client.stream(
            "GET", url, headers={"Host": host}, extensions=extensions
        ) as response:
            stream = response.extensions.get("network_stream")
            tls = stream.get_extra_info("ssl_object") if stream is not None else None
            version = tls.version() if tls is not None else None  # before the body closes it
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > MAX_BODY:
                    break
            headers = {k.lower(): v for k, v in reversed(response.headers.multi_items())}
            return Exchange(
                address=address,
                status=response.status_code,
                headers=headers,
                body=bytes(body[: MAX_BODY + 1]),
                oversize=len(body) > MAX_BODY,
                tls_version=version,
            )

    async def _get(self, stream: AsyncNetworkStream, url: str) -> tuple[int, str, bytes]:
        """One attempt on one connection from our resolver: TLS, one GET read by h11
        (one_get.py says why not the httpx client or httpcore's pool; `exchange`, for `check`,
        keeps httpx)."""
        host = url.split("/", 3)[2]
        headers = [(b"Host", host.encode("ascii")), *self._headers]
        try:
            stream = await stream.start_tls(self._tls, server_hostname=host)
            get = OneGet(stream)
            await get.send(POLICY_PATH, headers)
            status, raw = await get.head()
            fields = _fields(raw)
            _check_status(url, status, fields)
            content_type = _check_headers(url, fields)
            body = bytearray()
            async for chunk in get.body():
                body += chunk
                if len(body) > MAX_BODY:
                    raise PolicyFetchError(f"{url}: body larger than {MAX_BODY} bytes")
        finally:
            await stream.aclose()
        return status, content_type, bytes(body)


def _fetch_error(host: str, url: str, exc: Exception) -> PolicyFetchError:
    """Any failure of one attempt as the PolicyFetchError it stands for."""
    if isinstance(exc, PolicyFetchError):
        return exc
    if isinstance(exc, _NETWORK_ERRORS):
        return _classify(host, url, exc)
    return PolicyFetchError(f"{url}: {type(exc).__name__}: {exc}")  # any other library error


def _peer_address(stream: AsyncNetworkStream) -> str:
    """The IP the stream is connected to ('' if unknown: no other address is tried then)."""
    peer = stream.get_extra_info("server_addr")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _request_headers(user_agent: str) -> list[tuple[str, str]]:
    return [
        ("User-Agent", user_agent),
        ("Accept", "text/plain"),
        ("Accept-Encoding", "identity"),
        # RFC 8461 §3.3 forbids HTTP caching: ask intermediaries for a fresh copy too.
        ("Cache-Control", "no-cache"),
        ("Connection", "close"),
    ]


def _fields(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header fields by lower-case name; a repeated field's values joined by ", " (as httpx
    reads them, so two Content-Type fields are still refused)."""
    fields: dict[str, str] = {}
    for key, value in raw:
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        fields[name] = f"{fields[name]}, {text}" if name in fields else text
    return fields


def _check_status(url: str, status: int, headers: dict[str, str]) -> None:
    problem = redirect_problem(url, status, headers.get("location"))
    problem = problem or status_problem(url, status)
    if problem is not None:
        raise PolicyFetchError(problem)


def _check_headers(url: str, headers: dict[str, str]) -> str:
    """Content type and encoding (sts-policy-invalid); refuse an announced oversize early."""
    problem = content_type_problem(url, headers)
    if problem is not None:
        raise PolicyFetchError(problem, _INVALID)
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise PolicyFetchError(f"{url}: Content-Length {length} exceeds {MAX_BODY} bytes")
    return headers["content-type"]


def _parse(body: bytes) -> Policy:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyFetchError(f"policy is not valid UTF-8 (byte {exc.start})", _INVALID) from None
    try:
        return parse_policy(body)
    except PolicySyntaxError as exc:
        raise PolicyFetchError(f"invalid policy: {exc}", _INVALID) from None


def _classify(host: str, url: str, exc: BaseException) -> PolicyFetchError:
    """Certificate problems -> sts-webpki-invalid; everything else -> sts-policy-fetch-error."""
    cert_error = _cause(exc, ssl.SSLCertVerificationError)
    if cert_error is not None:
        reason = str(cert_error.verify_message or cert_error)
        return PolicyFetchError(f"certificate of {host} not accepted: {reason}", _WEBPKI)
    tls_error = _cause(exc, ssl.SSLError)
    if tls_error is not None and "UNRECOGNIZED_NAME" in str(tls_error.reason):
        return PolicyFetchError(f"{host} has no certificate for its name (TLS alert)", _WEBPKI)
    if tls_error is not None:
        return PolicyFetchError(f"TLS with {host} failed: {tls_error.reason or tls_error}")
    if isinstance(exc, httpx.TimeoutException | httpcore.TimeoutException):
        return PolicyFetchError(f"{url}: timed out ({type(exc).__name__})")
    return PolicyFetchError(f"{url}: {type(exc).__name__}: {exc}")


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of `kind` in the __cause__/__context__ chain of `exc`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
