"""httpx on an httpcore pool whose connections go to addresses from the daemon's own resolver.

Split out of policy_fetch.py (the fetch and its RFC 8461 limits live there). A and AAAA are
asked in parallel and the attempts raced (RFC 8305). An IP-literal host (used by `check`, which
fetches from every address of a policy host separately) is connected directly; SNI, Host and
the certificate check still use the name the caller gives.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Collection, Iterable
from typing import cast

import httpcore
import httpx

from mta_sts_policyd.errors import PolicyFetchError
from mta_sts_policyd.net.dns_client import DnsClient
from mta_sts_policyd.net.happy_eyeballs import (
    RESOLUTION_DELAY,
    AllAttemptsFailed,
    NoAddresses,
    connect_happy,
    connect_v4_first,
)
from mta_sts_policyd.net.https_stream import AsyncNetworkBackend, AsyncNetworkStream, open_stream

_MAX_EARLY = 10_000
"""Early A questions kept at once (each is taken by its fetch or discarded after its TXT)."""
_EARLY_LIFETIME = 30.0
"""An early answer older than this is not used (a fetch that did not follow its TXT at once)."""


class ResolvingBackend(AsyncNetworkBackend):
    """Connect to the policy host's addresses from our resolver, on the configured port.

    A and AAAA are asked in parallel and the connection attempts raced (RFC 8305); an A
    question started early by `prefetch` (while the TXT record is still being asked) is used
    instead of a new one, and then AAAA is only asked when IPv4 fails or stalls. httpcore still
    passes the host name to TLS, so SNI, Host and the certificate check use it.
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
        *,
        exclude: Collection[str] = (),
    ) -> AsyncNetworkStream:
        """`exclude`: addresses a fetch already tried (they answered, badly): only the others
        are resolved and raced; NoOtherAddress when there are none."""
        if _is_address(host.strip("[]")):
            return await open_stream(host.strip("[]"), self._port, timeout)  # `check`: one address
        early = None if exclude else self._take_early(host)

        async def attempt(address: str) -> AsyncNetworkStream:
            return await open_stream(address, self._port, timeout)

        async def close(stream: AsyncNetworkStream) -> None:
            await stream.aclose()

        try:
            if early is None:
                v4 = _without(self._dns.ipv4(host), exclude)
                v6 = _without(self._dns.ipv6(host), exclude)
                return await connect_happy(v4, v6, attempt, close, RESOLUTION_DELAY)
            # The early A answer came with the TXT one. Waiting the RFC 8305 resolution delay
            # for an AAAA answer would add that round trip to every cold fetch, so IPv4 goes
            # first and AAAA is the fallback, asked only when IPv4 has no address, failed, or
            # has not connected within the attempt delay.
            return await connect_v4_first(early, lambda: self._dns.ipv6(host), attempt, close)
        except NoAddresses as exc:
            if exclude and exc.failure is None:
                raise NoOtherAddress(f"policy host {host} has no other address") from None
            if exc.failure is not None:
                reason = exc.failure.reason
                raise PolicyFetchError(f"cannot resolve the policy host: {reason}") from None
            raise PolicyFetchError(f"policy host {host} has no A or AAAA record") from None
        except AllAttemptsFailed as exc:
            where = [p.replace(": ", f":{self._port}: ", 1) for p in exc.problems]
            raise PolicyFetchError(f"cannot connect to {host}: {'; '.join(where)}") from None

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
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


class PoolTransport(httpx.AsyncBaseTransport):
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


class NoOtherAddress(PolicyFetchError):
    """Every address of the policy host was tried already (`connect_tcp`'s `exclude`)."""


async def _without(addresses: Awaitable[list[str]], exclude: Collection[str]) -> list[str]:
    return [a for a in await addresses if a not in exclude] if exclude else await addresses


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
