"""The resolver's settings, the interfaces it depends on, and the context its parts share
(kept apart so the answer path, the update path and the refresh can name them without each
other)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache
from mta_sts_policyd.policy.shared_model import SharedFailure, SharedView
from mta_sts_policyd.policy.stats import LookupStats

if TYPE_CHECKING:
    from mta_sts_policyd.discovery.client import FetchResult, MxLookup, StsTxtLookup


class MxQuestion(Protocol):
    """An MX question asked ahead of need; `mx` reads (and only then parses) its answer."""

    def cancel(self) -> None: ...

    async def mx(self) -> MxLookup: ...


class DiscoveryLike(Protocol):
    async def lookup_txt(self, domain: str, *, fetch_likely: bool = False) -> StsTxtLookup: ...

    async def fetch_policy(self, domain: str) -> FetchResult: ...

    async def lookup_mx(self, domain: str) -> tuple[str, ...]: ...

    async def lookup_mx_ttl(self, domain: str) -> MxLookup: ...

    def mx_later(self, domain: str) -> MxQuestion: ...

    async def lookup_addresses(self, host: str) -> list[str]: ...

    async def dane_protected(self, mx_hosts: Sequence[str]) -> bool: ...


FailureListener = Callable[[CacheEntry, ResultType, str], None]
"""Called once per answered lookup while a discovery failure lasts (TLS-RPT, RFC 8461 §6)."""

PolicyListener = Callable[[CacheEntry], None]
"""Called for every answered lookup of a domain with a valid policy (e.g. testing-mode probes)."""


@dataclass(frozen=True)
class LookupSettings:
    """The resolver's timings and reply options.

    The values an operator can set have no defaults here: their defaults are written once, in
    the configuration ([cache] and [server] sections), and the composition root copies them
    over, so the documented default and the one the daemon runs with cannot drift apart.
    """

    txt_recheck: float
    cold_wait: float
    negative_ttl: float
    failure_backoff: float
    refresh: bool
    refresh_interval: float
    refresh_jitter: float
    refresh_concurrency: int
    exact_wildcards: bool
    sts_attributes: bool = False
    """Found out at start-up (the Postfix version), not configured."""
    dane_reply: bytes | None = None
    """Reply for DANE-protected enforce domains; None: DANE is not checked."""


class SharedPolicies(Protocol):
    """The fleet's shared tier between the memory hot set and the local store (fleet/ has the
    Redis implementation; the composition root plugs it in). Reads and the lock raise
    errors.FleetUnavailable when Redis cannot be used; writes never raise (they are queued
    while Redis is away and reconciled when it returns, the newest fetch winning)."""

    async def view(self, domain: str) -> SharedView: ...

    async def lock(self, domain: str) -> str | None:
        """Take the fleet-wide fetch lock: its token, or None when another node holds it."""
        ...

    async def unlock(self, domain: str, token: str) -> None: ...

    async def wait(
        self, domain: str, ready: Callable[[SharedView], bool], within: float
    ) -> SharedView | None:
        """The domain's view once `ready` accepts it; None after `within` seconds or when
        Redis fails."""
        ...

    async def put_policy(self, entry: CacheEntry) -> None: ...

    async def put_failure(self, domain: str, failure: SharedFailure, ttl: float) -> None: ...

    async def put_negative(self, domain: str, until: float) -> None: ...

    async def purge(self, domain: str | None) -> int | None:
        """Delete shared entries (one domain or all) and tell the other nodes; None when Redis
        could not be reached."""
        ...

    async def changed(self, domains: Sequence[str]) -> list[str]:
        """Of `domains`, those whose shared version differs from the one this node last saw."""
        ...


@dataclass
class ResolverContext:
    """What the answer path, the update path and the proactive refresh share. `settings` and
    `discovery` are replaced in place on reload, so every part sees the new ones at once."""

    discovery: DiscoveryLike
    cache: PolicyCache
    settings: LookupSettings
    clock: Callable[[], float]
    stats: LookupStats = field(default_factory=LookupStats)
    shared: SharedPolicies | None = None
    """Fleet mode's shared tier (None: a single host, nothing changes)."""
