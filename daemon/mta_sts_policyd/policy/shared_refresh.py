"""What the proactive refresh needs from a fleet's shared refresh queue (fleet/refresh_queue.py
implements it; the composition root plugs it in). Named here so the policy part never imports
the fleet part.

Every method may raise errors.FleetUnavailable (Redis down, slow, or its breaker open): the
refresh then falls back to refreshing the domains this node uses by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class SharedRefreshQueue(Protocol):
    @property
    def slack(self) -> float:
        """Seconds past its due time after which a node refreshes a policy it uses itself
        (the fleet's refresh should have reached it through the shared cache by then)."""
        ...

    async def report(self, used: Mapping[str, float], due: Mapping[str, float]) -> None:
        """Domains this node answered (domain -> last use) and when each is due by this node's
        copy; a due time only ever moves later (a claim in progress is not undone)."""
        ...

    async def claim(self, now: float) -> list[str]:
        """Up to one batch of domains due at `now`, leased to this node for a while."""
        ...

    async def done(self, due: Mapping[str, float]) -> None:
        """The claimed domains were refreshed (or tried): when each is due next."""
        ...
