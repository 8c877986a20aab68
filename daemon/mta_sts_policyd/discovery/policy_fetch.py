"""The HTTPS half of discovery: fetch and validate `https://mta-sts.<domain>/.well-known/mta-sts.txt`.

RFC 8461 §3.2/§3.3/§7 limits, all enforced here: Web-PKI certificate for the policy host by
DNS-ID only (no CN fallback), SNI, TLS >= 1.2, status 200 only, no redirects, no HTTP caching,
`text/plain`, at most 64 KiB (counted while streaming) and one deadline for the whole exchange
(slow-drip servers cannot stretch it). The policy host is resolved by the daemon's own resolver
(a custom httpcore network backend), so tests and operators' `nameservers` apply to it too.
httpx, httpcore and ssl exceptions are translated to PolicyFetchError here and nowhere else.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TypeVar, cast

import httpcore
import httpx

from mta_sts_policyd.errors import (
    ConfigError,
    PolicyFetchError,
    PolicySyntaxError,
    ResultType,
)
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.net.happy_eyeballs import (
    AllAttemptsFailed,
    NoAddresses,
    connect_first,
    resolve_both,
)
from mta_sts_policyd.net.https_stream import open_stream
from mta_sts_policyd.sts import Policy, parse_policy

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_BODY = 65_536
"""RFC 8461 §3.3 suggests 64 KB; reading stops and fails at the 65537th byte."""
MAX_TIMEOUT = 60.0
"""RFC 8461 §3.3 suggests one minute; longer configured timeouts are capped."""
_MAX_CONNECTIONS = 256
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
    OSError,  # includes ssl.SSLError
)


@dataclass(frozen=True)
class FetchResult:
    """A policy that passed every check, with what the server sent (for reports and `check`)."""

    policy: Policy
    body: bytes
    status: int
    content_type: str
    url: str


def make_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The platform trust store (or `ca_file` instead), TLS >= 1.2, DNS-ID names only (RFC 8461
    §3.3)."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"CA file {ca_file!r} is unusable: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.hostname_checks_common_name = False
    return ctx


_MAX_EARLY = 10_000
"""Early A questions kept at once (each is taken by its fetch or discarded after its TXT)."""
_EARLY_LIFETIME = 30.0
"""An early answer older than this is not used (a fetch that did not follow its TXT at once)."""


class _ResolvingBackend(httpcore.AsyncNetworkBackend):
    """Connect to the policy host's addresses from our resolver, on the configured port.

    A and AAAA are asked in parallel and the connection attempts raced (RFC 8305); an A
    question started early by `prefetch` (while the TXT record is still being asked) is used
    instead of a new one. httpcore still passes the host name to TLS, so SNI, Host and the
    certificate check use it.
    """

    def __init__(self, dns_client: DnsClient, port: int) -> None:
        self._dns = dns_client
        self._port = port
        self._early: dict[str, tuple[float, asyncio.Task[list[str]]]] = {}

    def prefetch(self, host: str) -> None:
        """Start the A question for `host` now; a connect within `_EARLY_LIFETIME` takes it."""
        now = asyncio.get_running_loop().time()
        if len(self._early) >= _MAX_EARLY:
            for name in [h for h, (t, _) in self._early.items() if now - t > _EARLY_LIFETIME]:
                self.discard(name)
        if host not in self._early and len(self._early) < _MAX_EARLY:
            self._early[host] = (now, asyncio.ensure_future(self._dns.ipv4(host)))

    def discard(self, host: str) -> None:
        """No fetch follows (no policy): forget the early answer, or stop waiting for it."""
        early = self._early.pop(host, None)
        if early is not None:
            early[1].cancel()

    def _take_early(self, host: str) -> asyncio.Task[list[str]] | None:
        early = self._early.pop(host, None)
        if early is None:
            return None
        if asyncio.get_running_loop().time() - early[0] > _EARLY_LIFETIME:
            early[1].cancel()
            return None
        return early[1]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        v4 = self._take_early(host) or self._dns.ipv4(host)
        try:
            addresses = await resolve_both(v4, self._dns.ipv6(host))
        except NoAddresses as exc:
            if exc.failure is not None:
                reason = exc.failure.reason
                raise PolicyFetchError(f"cannot resolve the policy host: {reason}") from None
            raise PolicyFetchError(f"policy host {host} has no A or AAAA record") from None

        async def attempt(address: str) -> httpcore.AsyncNetworkStream:
            return await open_stream(address, self._port, timeout)

        async def close(stream: httpcore.AsyncNetworkStream) -> None:
            await stream.aclose()

        try:
            return await connect_first(addresses, attempt, close)
        except AllAttemptsFailed as exc:
            where = [p.replace(": ", f":{self._port}: ", 1) for p in exc.problems]
            raise PolicyFetchError(f"cannot connect to {host}: {'; '.join(where)}") from None

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("policy hosts are never reached over UNIX sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


class _Transport(httpx.AsyncBaseTransport):
    """httpx on top of an httpcore pool with our backend (httpx offers no public hook for it)."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        )
        core = httpcore.Request(
            method=request.method,
            url=url,
            headers=request.headers.raw,
            content=cast(AsyncIterable[bytes], request.stream),
            extensions=request.extensions,
        )
        response = await self._pool.handle_async_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(cast(AsyncIterable[bytes], response.stream)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


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
        self._backend = _ResolvingBackend(dns_client, https_port)
        pool = httpcore.AsyncConnectionPool(
            ssl_context=make_tls_context(ca_file),
            max_connections=_MAX_CONNECTIONS,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=self._backend,
        )
        self._client = httpx.AsyncClient(
            transport=_Transport(pool),
            follow_redirects=False,
            timeout=httpx.Timeout(self.timeout),
            trust_env=False,
            headers={
                "User-Agent": user_agent,
                "Accept": "text/plain",
                "Accept-Encoding": "identity",
                # RFC 8461 §3.3 forbids HTTP caching: ask intermediaries for a fresh copy too.
                "Cache-Control": "no-cache",
                "Connection": "close",
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def prefetch_host(self, domain: str) -> None:
        """Ask for the policy host's IPv4 addresses now (a fetch of `domain` will likely follow)."""
        self._backend.prefetch(f"mta-sts.{domain}")

    def discard_host(self, domain: str) -> None:
        """No fetch of `domain` follows after all."""
        self._backend.discard(f"mta-sts.{domain}")

    async def fetch(self, domain: str) -> FetchResult:
        """GET and validate the policy of A-label `domain`; PolicyFetchError on failure."""
        host = f"mta-sts.{domain}"
        url = f"https://{host}{POLICY_PATH}"
        try:
            async with asyncio.timeout(self.timeout):
                status, content_type, body = await self._get(url)
        except TimeoutError:
            raise PolicyFetchError(f"{url}: no complete answer within {self.timeout:g} s") from None
        except PolicyFetchError:
            raise
        except _NETWORK_ERRORS as exc:
            raise _classify(host, url, exc) from None
        return FetchResult(_parse(body), body, status, content_type, url)

    async def _get(self, url: str) -> tuple[int, str, bytes]:
        async with self._client.stream("GET", url) as response:
            _check_status(url, response)
            content_type = _check_headers(url, response)
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > MAX_BODY:
                    raise PolicyFetchError(f"{url}: body larger than {MAX_BODY} bytes")
        return response.status_code, content_type, bytes(body)


def _check_status(url: str, response: httpx.Response) -> None:
    code = response.status_code
    if 300 <= code < 400:
        location = response.headers.get("location", "(no Location header)")
        raise PolicyFetchError(
            f"{url}: HTTP {code} redirect to {location} (redirects are not followed, RFC 8461 §3.3)"
        )
    if code != 200:
        raise PolicyFetchError(f"{url}: HTTP {code} (only 200 is accepted, RFC 8461 §3.3)")


def _check_headers(url: str, response: httpx.Response) -> str:
    """Content-Type must be text/plain (RFC 8461 §3.2); refuse encodings and announced oversize
    early."""
    content_type: str | None = response.headers.get("content-type")
    if content_type is None:
        raise PolicyFetchError(f"{url}: no Content-Type (text/plain required)", _INVALID)
    if content_type.split(";", 1)[0].strip().lower() != "text/plain":
        raise PolicyFetchError(
            f"{url}: Content-Type {content_type!r} is not text/plain (RFC 8461 §3.2)", _INVALID
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise PolicyFetchError(f"{url}: unsupported Content-Encoding {encoding!r}", _INVALID)
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise PolicyFetchError(f"{url}: Content-Length {length} exceeds {MAX_BODY} bytes")
    return content_type


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
