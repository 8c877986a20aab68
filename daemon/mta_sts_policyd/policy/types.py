"""The resolver's settings and the interfaces it depends on (kept apart so tests and the
refresh mixin can name them without the whole state machine)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.policy.cache import CacheEntry

if TYPE_CHECKING:
    from mta_sts_policyd.discovery.client import FetchResult, TxtLookup


class DiscoveryLike(Protocol):
    async def lookup_txt(self, domain: str) -> TxtLookup: ...

    async def fetch_policy(self, domain: str) -> FetchResult: ...

    async def lookup_mx(self, domain: str) -> tuple[str, ...]: ...

    async def lookup_addresses(self, host: str) -> list[str]: ...

    async def dane_protected(self, mx_hosts: Sequence[str]) -> bool: ...


FailureListener = Callable[[CacheEntry, ResultType, str], None]
"""Called once per answered lookup while a discovery failure lasts (TLS-RPT, RFC 8461 §6)."""

PolicyListener = Callable[[CacheEntry], None]
"""Called for every answered lookup of a domain with a valid policy (e.g. testing-mode probes)."""


@dataclass(frozen=True)
class LookupSettings:
    txt_recheck: float = 60.0
    cold_wait: float = 3.0
    negative_ttl: float = 300.0
    failure_backoff: float = 300.0
    refresh: bool = True
    refresh_interval: float = 86400.0
    refresh_jitter: float = 3600.0
    refresh_concurrency: int = 20
    sts_attributes: bool = False
    exact_wildcards: bool = True
    dane_reply: bytes | None = None
    """Reply for DANE-protected enforce domains; None: DANE is not checked."""
