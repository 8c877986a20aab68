"""The resolver's settings, the interfaces it depends on, and the context its parts share
(kept apart so the answer path, the update path and the refresh can name them without each
other)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache
from mta_sts_policyd.policy.stats import LookupStats

if TYPE_CHECKING:
    from mta_sts_policyd.discovery.client import FetchResult, MxLookup, StsTxtLookup


class DiscoveryLike(Protocol):
    async def lookup_txt(self, domain: str, *, fetch_likely: bool = False) -> StsTxtLookup: ...

    async def fetch_policy(self, domain: str) -> FetchResult: ...

    async def lookup_mx(self, domain: str) -> tuple[str, ...]: ...

    async def lookup_mx_ttl(self, domain: str) -> MxLookup: ...

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


@dataclass
class ResolverContext:
    """What the answer path, the update path and the proactive refresh share. `settings` and
    `discovery` are replaced in place on reload, so every part sees the new ones at once."""

    discovery: DiscoveryLike
    cache: PolicyCache
    settings: LookupSettings
    clock: Callable[[], float]
    stats: LookupStats = field(default_factory=LookupStats)
