"""Drive an answer coroutine inline first; continue it in a Task only if it really waits.

Why: a cached answer never suspends, so it costs no Task and no extra loop iteration. When the
coroutine does suspend, `finish` hands the future it waits on to a new Task and keeps driving
the same coroutine there (cancellation and errors go to the coroutine as usual).
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


async def finish(coro: Awaitable[bytes], waiting: Any) -> bytes:
    """Continue `coro`, which already ran inline up to a suspension yielding `waiting`."""
    return await _Resumed(coro, waiting)


class _Resumed:
    """Awaitable that hands the pending future to the Task, then keeps driving `coro`."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Awaitable[bytes], waiting: Any) -> None:
        self._coro: Coroutine[Any, Any, bytes] = coro  # type: ignore[assignment]
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, bytes]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go to the coroutine
                try:
                    waiting = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                continue
            try:
                waiting = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
