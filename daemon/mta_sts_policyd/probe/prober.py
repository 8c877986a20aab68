"""STARTTLS probe of an MX host, judged by RFC 8461 §4 and classified by RFC 8460 §4.3.

Used for `testing`-mode domains (whose failures Postfix never sees, because the daemon answers
NOTFOUND for them) and by the `probe` command. Never on the socketmap answer path: it talks SMTP
to remote hosts and takes seconds. Results are cached per MX host; the policy's `mx` patterns
are applied on top of the cached network result, so MX hosts shared by many domains are
contacted once per `reprobe_interval`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from mta_sts_policyd.errors import ConfigError, ResultType
from mta_sts_policyd.housekeeping import cancel_and_wait, evict
from mta_sts_policyd.net.tls import Verify, client_context
from mta_sts_policyd.probe.result import ProbeResult, apply_patterns
from mta_sts_policyd.probe.smtp import Session, run_session
from mta_sts_policyd.probe.tls import host_mismatch_reason, matches_host
from mta_sts_policyd.sts.names import host_name

__all__ = [
    "MAX_ADDRESSES",
    "MxProber",
    "ProbeResult",
    "Resolver",
    "apply_patterns",
    "probe_target",
]

log = logging.getLogger(__name__)

Resolver = Callable[[str], Awaitable[list[str]]]

MAX_ADDRESSES = 5
"""Addresses tried per MX when connecting fails (Postfix's smtp_mx_address_limit default)."""

_EHLO_NAME = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]|\[IPv6:[0-9A-Fa-f:.]+\]", re.ASCII)

_UNTRUSTED = frozenset({ResultType.CERTIFICATE_NOT_TRUSTED, ResultType.CERTIFICATE_EXPIRED})


def _judge(
    host: str, address: str, session: Session, peeked: Session | None, now: float
) -> ProbeResult:
    """Turn a session (and the second, unverified one on a certificate failure) into a verdict.

    The unverified session supplies the certificate and the TLS version the failed one could
    not report, so `check` shows them for a refused certificate too.
    """
    info = session.cert or (peeked.cert if peeked else None)
    version = session.tls_version or (peeked.tls_version if peeked else None)
    result = ProbeResult(
        mx_host=host,
        address=address,
        ok=session.ok,
        result_type=session.result_type,
        reason=session.reason,
        failure_reason_code=session.failure_reason_code,
        tls_version=version,
        cert_not_after=info.not_after if info else None,
        cert_names=info.dns_names if info else (),
        receiving_helo=session.receiving_helo,
        checked_at=now,
    )
    if not session.ok:
        return result
    if info is None:
        code = "no-peer-certificate"
        return replace(
            result, ok=False, result_type=ResultType.VALIDATION_FAILURE, reason=code,
            failure_reason_code=code,
        )  # fmt: skip
    if not matches_host(info.dns_names, host):
        return replace(
            result,
            ok=False,
            result_type=ResultType.CERTIFICATE_HOST_MISMATCH,
            reason=host_mismatch_reason(info, host),
            failure_reason_code="certificate-host-mismatch",
        )
    return replace(result, reason=f"STARTTLS with a valid certificate ({session.tls_version})")


def probe_target(mx_host: str) -> str:
    """The one form of an MX host the prober keys its cache and single flight by.

    An address literal (`192.0.2.25`, `::1`, `[2001:db8::25]`) becomes its canonical text, so
    each spelling of one address shares a probe; anything else is `host_name`'s A-label form.
    `host_name` alone refuses IPv6 literals (their colons are no host-name label) and bracketed
    addresses. Raises InvalidName (a ValueError) for what is neither.
    """
    bracketed = mx_host.startswith("[") and mx_host.endswith("]")
    try:
        return ipaddress.ip_address(mx_host[1:-1] if bracketed else mx_host).compressed
    except ValueError:
        return host_name(mx_host)


@dataclass(slots=True)
class _Entry:
    result: ProbeResult
    expires: float


class MxProber:
    """Bounded-concurrency, cached STARTTLS prober (one shared instance per daemon)."""

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        timeout: float = 30.0,
        concurrency: int = 10,
        reprobe_interval: float = 6 * 3600,
        retry_interval: float = 300.0,
        ehlo_name: str | None = None,
        port: int = 25,
        resolve: Resolver | None = None,
        clock: Callable[[], float] = time.time,
        max_entries: int = 10_000,
    ) -> None:
        self._ctx = client_context(Verify.CHAIN, ca_file=ca_file)
        self._peek_ctx = client_context(Verify.NOTHING, minimum_version=None)
        self._timeout = timeout
        self._sem = asyncio.Semaphore(concurrency)
        self._reprobe = reprobe_interval
        self._retry = min(retry_interval, reprobe_interval)
        self._ehlo = ehlo_name or socket.getfqdn()
        if not _EHLO_NAME.fullmatch(self._ehlo):
            raise ConfigError(f"probe EHLO name {self._ehlo!r} is not a host name or address")
        self._port = port
        self._resolve = resolve or self._getaddrinfo
        self._clock = clock
        self._max_entries = max_entries
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[ProbeResult]] = {}

    async def probe(self, mx_host: str, patterns: Sequence[str] | None = None) -> ProbeResult:
        """Cached verdict; re-probed after `reprobe_interval` (transient: `retry_interval`)."""
        host = probe_target(mx_host)
        entry = self._cache.get(host)
        if entry is not None and entry.expires > self._clock():
            return apply_patterns(entry.result, patterns)
        return apply_patterns(await self._shared(host), patterns)

    async def probe_fresh(self, mx_host: str, patterns: Sequence[str] | None = None) -> ProbeResult:
        """Ignore the cache (joins a probe of the same host already running); refreshes it."""
        return apply_patterns(await self._shared(probe_target(mx_host)), patterns)

    def cached(self, mx_host: str) -> ProbeResult | None:
        """The last network verdict for `mx_host`, even if due for a re-probe; no I/O."""
        entry = self._cache.get(probe_target(mx_host))
        return entry.result if entry else None

    async def aclose(self) -> None:
        """Cancel probes still running (daemon shutdown)."""
        await cancel_and_wait(list(self._inflight.values()))

    async def _shared(self, host: str) -> ProbeResult:
        """Single flight per host; a cancelled caller does not cancel the others' probe."""
        task = self._inflight.get(host)
        if task is None:
            task = asyncio.create_task(self._probe_and_store(host), name=f"mx-probe {host}")
            self._inflight[host] = task
            task.add_done_callback(lambda _t: self._inflight.pop(host, None))
        return await asyncio.shield(task)

    async def _probe_and_store(self, host: str) -> ProbeResult:
        async with self._sem:
            try:
                result = await self._probe_network(host)
            except Exception as err:  # a bug must not kill the caller's background loop
                log.exception("event=probe-crashed mx=%s", host)
                result = self._transient(host, None, f"internal error: {type(err).__name__}")
        lifetime = self._retry if result.transient else self._reprobe
        self._store(host, _Entry(result, self._clock() + lifetime))
        return result

    def _store(self, host: str, entry: _Entry) -> None:
        self._cache.pop(host, None)  # re-inserted: the oldest insertion is evicted first
        self._cache[host] = entry
        now = self._clock()
        evict(self._cache, self._max_entries, lambda e: e.expires <= now)

    async def _probe_network(self, host: str) -> ProbeResult:
        try:
            addresses = (await self._resolve(host))[:MAX_ADDRESSES]
        except Exception as err:  # the injected resolver's errors are not ours to know
            return self._transient(host, None, f"could not resolve {host}: {err}")
        if not addresses:
            return self._transient(host, None, f"no address for {host}")
        session = Session(ok=False, result_type=None, reason="not probed")
        for address in addresses:
            session = await self._session(host, address, self._ctx)
            if session.connected:
                break
        return await self._verdict(host, address, session)

    async def probe_at(self, mx_host: str, address: str) -> ProbeResult:
        """One address of one MX, uncached and without patterns: `check` judges every address
        of every MX separately (a sender may reach any of them)."""
        host = probe_target(mx_host)
        async with self._sem:
            return await self._verdict(host, address, await self._session(host, address, self._ctx))

    async def _verdict(self, host: str, address: str, session: Session) -> ProbeResult:
        if not session.connected:
            return self._transient(host, address, session.reason)
        peeked = None
        if session.result_type in _UNTRUSTED:
            peeked = await self._session(host, address, self._peek_ctx)
        return _judge(host, address, session, peeked, self._clock())

    def _session(self, host: str, address: str, ctx: ssl.SSLContext) -> Awaitable[Session]:
        return run_session(
            host=host,
            address=address,
            port=self._port,
            ctx=ctx,
            ehlo_name=self._ehlo,
            step_timeout=self._timeout,
        )

    def _transient(self, host: str, address: str | None, reason: str) -> ProbeResult:
        return ProbeResult(
            host, address, False, None, reason, None, None, None, (), None, self._clock()
        )

    async def _getaddrinfo(self, host: str) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, self._port, type=socket.SOCK_STREAM
        )
        return list(dict.fromkeys(str(info[4][0]) for info in infos))
