"""When to ask the ACME CA again: at about two thirds of a certificate's lifetime, with jitter,
and with a growing back-off after failures (rate limits, server errors, an unreachable CA): 5
minutes doubling up to 6 hours, each stretched by up to 25 % at random so names that failed
together do not retry together, and never earlier than the CA's `Retry-After` (RFC 8555 §6.6:
a rate-limited client waits as long as it is told). A failure changes no file: the
certificate in use keeps serving. Decisions are pure functions of the clock; `Renewal.run` is
the loop around them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mta_sts_policyd.host.acme_issuer import AcmeFailure, AcmeIssuer
from mta_sts_policyd.host.certificates import CertificateSet

log = logging.getLogger(__name__)

RENEW_AT = 2 / 3
"""Fraction of the lifetime after which a certificate is renewed (Let's Encrypt's advice)."""
JITTER = 0.05
"""Up to this fraction of the lifetime earlier, so many names do not renew in one burst."""
FIRST_BACKOFF = timedelta(minutes=5)
MAX_BACKOFF = timedelta(hours=6)
BACKOFF_JITTER = 0.25
"""Each back-off is stretched by up to this fraction, at random."""
MAX_RETRY_AFTER = timedelta(days=30)
"""A CA's Retry-After is honoured up to this (a garbled header must not stop renewals for good)."""
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


def retry_delay(backoff: timedelta, retry_after: float | None, rand: float) -> timedelta:
    """The wait before the next attempt: the back-off stretched by `rand` (in [0, 1)) times
    BACKOFF_JITTER, and no shorter than the CA's Retry-After (capped at MAX_RETRY_AFTER)."""
    delay = backoff * (1 + BACKOFF_JITTER * rand)
    if retry_after is not None:
        delay = max(delay, min(timedelta(seconds=retry_after), MAX_RETRY_AFTER))
    return delay


@dataclass
class Renewal:
    issuer: AcmeIssuer
    certificates: CertificateSet
    names: tuple[str, ...]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    spread: Callable[[str], float] = field(default=lambda name: stable_spread(name))
    rand: Callable[[], float] = random.random
    _backoff: dict[str, tuple[datetime, timedelta]] = field(default_factory=dict)
    """Name -> (no attempt before, the back-off level that set it)."""

    def next_attempt(self, name: str) -> datetime | None:
        """When a name that failed may be tried again (None: it has not failed)."""
        waiting = self._backoff.get(name)
        return waiting[0] if waiting is not None else None

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
                level = next_backoff(self._backoff.get(name, (None, None))[1])
                failure = exc if isinstance(exc, AcmeFailure) else AcmeFailure(str(exc))
                delay = retry_delay(level, failure.retry_after, self.rand())
                self._backoff[name] = (self.clock() + delay, level)
                log.warning(
                    "event=acme-failed name=%s problem=%s reason=%r retry_after=%s retry_in=%ds",
                    name,
                    failure.problem.rsplit(":", 1)[-1] or "-",
                    str(exc),
                    "-" if failure.retry_after is None else f"{failure.retry_after:.0f}s",
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
