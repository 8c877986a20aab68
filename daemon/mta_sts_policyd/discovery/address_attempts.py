"""Try a policy host's addresses in turn within one deadline, without one stalled address
eating it.

Why: a host with several addresses (dual stack, or a pool) can have one that accepts the
connection and then never answers, or answers badly. An attempt that fails moves on to the
next address at once; one that has been connected for `stall_after` without an answer gets a
second attempt on another address next to it (it is not cancelled: a single slow server may
still answer before the deadline). The first good answer wins and the others are cancelled.
When none is good, the error is the first attempt's (the preferred address), naming the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mta_sts_policyd.discovery.http_transport import NoOtherAddress
from mta_sts_policyd.errors import PolicyFetchError

T = TypeVar("T")

_RECHECK = 0.25
"""How soon a stalled-looking attempt that has not connected yet is looked at again."""


@dataclass(eq=False)
class Attempt:
    """One try on one address; `address` is known once connected ('' before, or if unknown)."""

    address: str = ""
    connected: float | None = None
    error: PolicyFetchError | None = None

    def mark_connected(self, address: str) -> None:
        self.address = address
        self.connected = asyncio.get_running_loop().time()


OneTry = Callable[[Collection[str], Attempt], Coroutine[Any, Any, T]]
"""Connect to an address not in the collection, note it on the Attempt, then use it."""


class AddressAttempts(Generic[T]):
    """Runs `one_try` on one address after another (at most `limit`) until one succeeds.

    `error_of` turns any failure into the PolicyFetchError it stands for; a NoOtherAddress,
    a failure before connecting, or one whose address is unknown ends the list of addresses.
    """

    def __init__(
        self,
        one_try: OneTry[T],
        error_of: Callable[[Exception], PolicyFetchError],
        *,
        limit: int,
        stall_after: float,
    ) -> None:
        self._one_try = one_try
        self._error_of = error_of
        self._limit = limit
        self._stall_after = stall_after
        self._attempts: list[Attempt] = []
        self._tasks: dict[Attempt, asyncio.Task[T]] = {}
        self._no_more = False

    async def run(self) -> T:
        """The first good answer; the summary PolicyFetchError when every attempt failed."""
        loop = asyncio.get_running_loop()
        try:
            self._start()
            while True:
                running = [a for a in self._attempts if a.error is None]
                if not running:
                    if not self._may_start():
                        raise self.summary()
                    self._start()
                    continue
                newest = running[-1]
                if newest.connected is None:
                    wait: float = _RECHECK
                else:
                    wait = max(0.0, newest.connected + self._stall_after - loop.time())
                tasks = {self._tasks[a]: a for a in running}
                done, _ = await asyncio.wait(
                    tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        return task.result()
                    self._failed(tasks[task], exc)
                stalled = newest.connected is not None and (
                    loop.time() - newest.connected >= self._stall_after
                )
                if not done and stalled and self._may_start():
                    self._start()  # the newest is silent: another address beside it
        finally:
            await self._cancel_running()

    def late(self, reason: str) -> PolicyFetchError:
        """The summary when the deadline ended the fetch: unfinished attempts get `reason`."""
        for attempt in self._attempts:
            if attempt.error is None:
                attempt.error = PolicyFetchError(reason)
        return self.summary()

    def summary(self) -> PolicyFetchError:
        """The first attempt's error (its result type too), naming the others' in order."""
        failed = [(a.address, a.error) for a in self._attempts if a.error is not None]
        first = failed[0][1]
        if len(failed) == 1:
            return first
        others = "; ".join(f"{address or 'then'}: {error.reason}" for address, error in failed[1:])
        return PolicyFetchError(
            f"{first.reason} (at {failed[0][0]}); also {others}", first.result_type
        )

    def _may_start(self) -> bool:
        return not self._no_more and len(self._attempts) < self._limit

    def _start(self) -> None:
        tried = [a.address for a in self._attempts if a.address]
        attempt = Attempt()
        self._tasks[attempt] = asyncio.create_task(self._one_try(tried, attempt))
        self._attempts.append(attempt)

    def _failed(self, attempt: Attempt, exc: BaseException) -> None:
        if isinstance(exc, NoOtherAddress):
            self._no_more = True
            self._attempts.remove(attempt)  # not a failure of an address: there was none left
            return
        if not isinstance(exc, Exception):
            raise exc
        attempt.error = self._error_of(exc)
        if attempt.connected is None or not attempt.address:
            self._no_more = True  # no address to leave out next time: the list is used up

    async def _cancel_running(self) -> None:
        tasks = [task for task in self._tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
