"""Shared housekeeping: stopping background tasks, bounding in-memory tables."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.housekeeping import cancel_and_wait, evict


async def test_cancel_and_wait_stops_every_task_even_one_that_fails_on_the_way() -> None:
    cleaned: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(name)

    async def fails_when_stopped() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("broken clean-up") from None

    tasks = [asyncio.create_task(forever("a")), asyncio.create_task(fails_when_stopped())]
    tasks.append(asyncio.create_task(forever("b")))
    await asyncio.sleep(0)
    await cancel_and_wait([*tasks, None])
    assert all(task.done() for task in tasks)
    assert sorted(cleaned) == ["a", "b"]


async def test_cancel_and_wait_lets_the_callers_own_cancellation_through() -> None:
    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # slow to stop: the caller is cancelled meanwhile
                return

    inner = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait([inner]))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


@given(
    st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=40),
    st.integers(0, 20),
)
def test_evict_drops_expired_first_then_the_oldest(
    rows: list[tuple[int, bool]], limit: int
) -> None:
    table = dict(rows)  # insertion order = age; value: expired?
    before = list(table.items())
    evict(table, limit, lambda expired: expired)
    assert len(table) <= max(limit, len(before) if len(before) <= limit else 0)
    if len(before) <= limit:
        assert list(table.items()) == before  # under the limit nothing is touched
        return
    fresh = [key for key, expired in before if not expired]
    assert list(table) == (fresh[-limit:] if limit else [])
