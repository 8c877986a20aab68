"""When to ask the ACME CA again: at about two thirds of a certificate's lifetime, with jitter,
and with a growing back-off after failures (rate limits, an unreachable CA). Decisions are pure
functions of the clock; `Renewal.run` is the loop around them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mta_sts_policyd.host.acme_issuer import AcmeIssuer
from mta_sts_policyd.host.certificates import CertificateSet

log = logging.getLogger(__name__)

RENEW_AT = 2 / 3
"""Fraction of the lifetime after which a certificate is renewed (Let's Encrypt's advice)."""
JITTER = 0.05
"""Up to this fraction of the lifetime earlier, so many names do not renew in one burst."""
FIRST_BACKOFF = timedelta(minutes=5)
MAX_BACKOFF = timedelta(hours=6)
TICK = 60.0


def renew_after(not_before: datetime, not_after: datetime, spread: float) -> datetime:
    """The moment renewal is due; `spread` in [0, 1) moves it earlier by up to JITTER."""
    lifetime = not_after - not_before
    return not_before + lifetime * (RENEW_AT - JITTER * spread)


def stable_spread(name: str) -> float:
    """A per-name number in [0, 1): the same jitter for a name across restarts."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") / 2**32


def next_backoff(previous: timedelta | None) -> timedelta:
    return FIRST_BACKOFF if previous is None else min(previous * 2, MAX_BACKOFF)


@dataclass
class Renewal:
    issuer: AcmeIssuer
    certificates: CertificateSet
    names: tuple[str, ...]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    spread: Callable[[str], float] = field(default=lambda name: stable_spread(name))
    _backoff: dict[str, tuple[datetime, timedelta]] = field(default_factory=dict)

    def due(self, name: str, now: datetime) -> bool:
        waiting = self._backoff.get(name)
        if waiting is not None and now < waiting[0]:
            return False
        validity = self.certificates.validity(name)
        if validity is None:
            return True
        return now >= renew_after(*validity, self.spread(name))

    async def once(self) -> None:
        for name in self.names:
            if not self.due(name, self.clock()):
                continue
            try:
                await asyncio.to_thread(self.issuer.issue, name)
            except Exception as exc:  # the CA's errors, network errors: all mean "later"
                delay = next_backoff(self._backoff.get(name, (None, None))[1])
                self._backoff[name] = (self.clock() + delay, delay)
                log.warning(
                    "event=acme-failed name=%s reason=%r retry_in=%ds",
                    name,
                    str(exc),
                    delay.total_seconds(),
                )
                continue
            self._backoff.pop(name, None)
            self.certificates.reload()

    async def run(self, tick: float = TICK) -> None:
        while True:
            try:
                await self.once()
            except Exception:  # a bug must not end renewals
                log.exception("event=acme-renewal-crashed")
            await asyncio.sleep(tick)
