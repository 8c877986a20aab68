"""Invalidation of the shared policy cache: a pub/sub subscriber and a periodic revalidation.

The subscriber (its own connection) hears "DOMAIN VERSION" after every shared write and has the
resolver re-read that domain (adopted only when newer and valid: never a downgrade), "DOMAIN
failure" (cold waiters re-read at once) and "DOMAIN purge NODE" / "* purge NODE" (an operator's
fleet-wide purge). Pub/sub loses every message sent while a node is disconnected, so the
versions of the domains in memory are also compared with what this node saw, every
`revalidate_interval` and at once after each reconnect; queued writes are reconciled then too.

While the breaker is open nothing here calls Redis: the subscription is dropped, and a trial
call is made only when the breaker's reset time has passed (one call, as the breaker allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.fleet.breaker import BreakerState
from mta_sts_policyd.fleet.connection import FleetClient, redis_errors
from mta_sts_policyd.fleet.shared_policies import SharedPolicyCache

log = logging.getLogger(__name__)

LISTEN_POLL = 1.0
"""Seconds one read of the subscription waits before the breaker is looked at again."""
RETRY = 0.25
"""Seconds between looks at an open breaker (no call is made before its reset time)."""
MAX_DOMAIN = 253


class InvalidationTarget(Protocol):
    """What the subscriber drives (policy.resolver.PolicyResolver has these)."""

    async def shared_changed(self, domain: str) -> None: ...

    async def revalidate_shared(self) -> int: ...

    async def purge(self, domain: str | None) -> int: ...


class Invalidations:
    def __init__(
        self,
        client: FleetClient,
        shared: SharedPolicyCache,
        target: InvalidationTarget,
        *,
        revalidate_interval: float,
        listen_poll: float = LISTEN_POLL,
    ) -> None:
        self.client = client
        self.shared = shared
        self.target = target
        self.revalidate_interval = revalidate_interval
        self.listen_poll = listen_poll
        self.subscribed = False
        self.messages = 0
        self._errors = redis_errors()
        self._pubsub: Any = None

    # --- the subscriber ------------------------------------------------------------------------

    async def run(self) -> None:
        task = asyncio.current_task()
        try:
            while True:
                if self._pubsub is None and not await self._connect():
                    await asyncio.sleep(RETRY)
                    continue
                await self._listen_once()
                if task is not None and task.cancelling():
                    # redis-py's timed read can turn a cancellation into "no message"
                    raise asyncio.CancelledError
        finally:
            await self._drop("stopping")

    async def _connect(self) -> bool:
        if not self.client.available and not self._trial_due():
            return False
        pubsub = self.client.redis.pubsub()
        try:
            await self.client.run(
                lambda _r: pubsub.subscribe(self.client.keys.invalidations), "subscribe"
            )
        except FleetUnavailable:
            await self._close(pubsub)
            return False
        self._pubsub, self.subscribed = pubsub, True
        log.info("event=fleet-subscribed channel=%s", self.client.keys.invalidations)
        await self.catch_up()
        return True

    def _trial_due(self) -> bool:
        """The breaker is open: is its reset time over (so a trial call is allowed)?"""
        breaker = self.client.breaker
        if breaker.state is BreakerState.OPEN:
            return breaker.clock() - breaker.opened_at >= breaker.reset
        return breaker.state is BreakerState.HALF_OPEN

    async def catch_up(self) -> None:
        """After a (re)connect: reconcile queued writes, then re-read what changed unseen."""
        try:
            await self.shared.reconcile()
            await self.target.revalidate_shared()
        except Exception:  # the subscription goes on; the next revalidation tries again
            log.exception("event=fleet-catch-up-failed")

    async def _listen_once(self) -> None:
        if not self.client.available:
            await self._drop("breaker open")
            return
        try:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=self.listen_poll
            )
        except self._errors as exc:
            self.client.breaker.failed(f"subscription: {exc!r}")
            await self._drop(repr(exc))
            return
        if message is not None and message.get("type") == "message":
            self.messages += 1
            await self.handle(message.get("data"))

    async def _drop(self, reason: str) -> None:
        if self._pubsub is None:
            return
        pubsub, self._pubsub, self.subscribed = self._pubsub, None, False
        log.info("event=fleet-unsubscribed reason=%r", reason)
        await self._close(pubsub)

    async def _close(self, pubsub: Any) -> None:
        with contextlib.suppress(*self._errors):
            await pubsub.aclose()

    async def handle(self, data: bytes | str | None) -> None:
        """One message; anything not in the expected form is ignored (Redis is not trusted)."""
        if isinstance(data, bytes):
            data = data.decode("ascii", "replace")
        parts = (data or "").split(" ")
        domain = parts[0]
        if not domain or len(domain) > MAX_DOMAIN or not domain.isascii() or len(parts) < 2:
            return
        self.shared.wake(domain)
        try:
            if parts[1] == "purge":
                if len(parts) < 3 or parts[2] != self.shared.node:
                    await self.target.purge(None if domain == "*" else domain)
            elif parts[1].isdigit() and int(parts[1]) != self.shared.seen.get(domain, 0):
                await self.target.shared_changed(domain)
        except Exception:  # one bad message must not end the subscription
            log.exception("event=fleet-invalidation-failed domain=%s", domain)

    # --- the revalidation ----------------------------------------------------------------------

    async def run_revalidation(self) -> None:
        while True:
            await asyncio.sleep(self.revalidate_interval)
            if self.client.available:
                await self.catch_up()
