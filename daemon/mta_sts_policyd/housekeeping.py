"""Housekeeping that several long-running parts share: stopping their background tasks and
keeping their in-memory tables bounded. A shared leaf (imports nothing of the package), so the
probe, the TLS-RPT parts and the service use one version of each rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, MutableMapping
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object] | None]) -> None:
    """Cancel `tasks` and wait until every one has finished (shutdown).

    Their outcomes are dropped: a task that failed while being stopped must not abort the rest
    of the shutdown. The caller's own cancellation still propagates (gather, not a blanket
    suppress of CancelledError, which would also swallow it).
    """
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def evict(table: MutableMapping[K, V], limit: int, expired: Callable[[V], bool]) -> None:
    """Bring `table` back to `limit` entries: expired ones go first, then the oldest inserted.

    Relies on insertion order (dict), so a caller that re-inserts on update gets LRU-like
    behaviour. Costs one scan, and only when the table is over its limit.
    """
    if len(table) <= limit:
        return
    for key in [key for key, value in table.items() if expired(value)]:
        del table[key]
    while len(table) > limit:
        del table[next(iter(table))]
