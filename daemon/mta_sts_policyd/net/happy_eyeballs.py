"""Connect to the first address that answers, IPv6 and IPv4 raced (RFC 8305, Happy Eyeballs v2).

Why: a cold policy lookup is a chain of round trips that Postfix waits for. The A and AAAA
questions run in parallel; connection attempts start as soon as addresses are known and are
staggered by the connection attempt delay instead of waiting for each one to fail, so a dead
address (or a broken address family) costs 250 ms, not a connect timeout.

Rules kept from RFC 8305: AAAA preferred, but once A has answered, AAAA gets at most the
resolution delay (§3, 50 ms) before IPv4 attempts start; addresses interleaved by family, IPv6
first (§4); a new attempt every connection attempt delay (§5, 250 ms) or at once when the
previous one failed; the first established connection wins and the others are closed. One
departure, `connect_v4_first`: when the A question went out early (with the `_mta-sts` TXT
one, for a cold lookup), IPv4 is tried at once and AAAA is only asked if IPv4 fails.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from mta_sts_policyd.errors import DnsLookupError

T = TypeVar("T")

RESOLUTION_DELAY = 0.05
"""RFC 8305 §3: how long an A answer waits for the AAAA answer."""
CONNECTION_ATTEMPT_DELAY = 0.25
"""RFC 8305 §5: the recommended delay between two connection attempts."""


class NoAddresses(Exception):
    """Neither family gave an address; `failure` is the DNS error, if there was one."""

    def __init__(self, failure: DnsLookupError | None) -> None:
        super().__init__(failure.reason if failure else "no A or AAAA record")
        self.failure = failure


class AllAttemptsFailed(Exception):
    """Every address was tried; `problems` says what went wrong at each, in order."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def interleave(v6: Sequence[str], v4: Sequence[str]) -> list[str]:
    """RFC 8305 §4: alternate the families, IPv6 first, keeping each family's order."""
    mixed = itertools.chain.from_iterable(itertools.zip_longest(v6, v4))
    return [address for address in mixed if address is not None]


async def resolve_both(
    v4: Awaitable[list[str]], v6: Awaitable[list[str]], resolution_delay: float = RESOLUTION_DELAY
) -> list[str]:
    """Both answers, or A alone when AAAA is later than `resolution_delay` after it.

    A failure of one family counts as "no addresses" while the other family has some; when
    neither has any, NoAddresses carries the first DNS error.
    """
    v4_task, v6_task = asyncio.ensure_future(v4), asyncio.ensure_future(v6)
    try:
        return await _first_addresses(v4_task, v6_task, resolution_delay)
    finally:
        v6_task.cancel()  # a late AAAA answer is no longer needed
        v4_task.cancel()


async def connect_happy(
    v4: Awaitable[list[str]],
    v6: Awaitable[list[str]],
    connect: Callable[[str], Awaitable[T]],
    close: Callable[[T], Awaitable[None]],
    resolution_delay: float = RESOLUTION_DELAY,
) -> T:
    """Resolve and connect; AAAA answers that come after the attempts began are tried when
    every address known then has failed (a dual-stack host with broken IPv4 still works)."""
    v4_task, v6_task = asyncio.ensure_future(v4), asyncio.ensure_future(v6)
    try:
        addresses = await _first_addresses(v4_task, v6_task, resolution_delay)
        try:
            return await connect_first(addresses, connect, close)
        except AllAttemptsFailed as failed:
            if v6_task.done():
                raise
            await asyncio.wait({v6_task})
            later = [a for a in _addresses(v6_task) if a not in addresses]
            if not later:
                raise
            try:
                return await connect_first(later, connect, close)
            except AllAttemptsFailed as again:
                raise AllAttemptsFailed(failed.problems + again.problems) from None
    finally:
        v6_task.cancel()
        v4_task.cancel()


async def connect_v4_first(
    v4: Awaitable[list[str]],
    ask_v6: Callable[[], Awaitable[list[str]]],
    connect: Callable[[str], Awaitable[T]],
    close: Callable[[T], Awaitable[None]],
) -> T:
    """`connect_happy` with no resolution delay, for an A question asked early (beside the
    TXT one): IPv4 attempts start as soon as A has addresses; AAAA is only asked (`ask_v6`)
    when A has none or every IPv4 attempt failed. Almost every policy host connects on
    IPv4, so asking AAAA beside it cost each cold fetch a DNS question (and in a burst, the
    CPU of every other lookup's question) for an answer that was thrown away; a host whose
    IPv4 refuses pays one round trip more before trying IPv6."""
    failure: DnsLookupError | None = None
    try:
        v4_addresses = await v4
    except DnsLookupError as exc:
        failure, v4_addresses = exc, []
    problems: list[str] = []
    if v4_addresses:
        try:
            return await connect_first(v4_addresses, connect, close)
        except AllAttemptsFailed as failed:
            problems = failed.problems
    try:
        v6_addresses = [a for a in await ask_v6() if a not in v4_addresses]
    except DnsLookupError as exc:
        failure, v6_addresses = failure or exc, []
    if not v6_addresses:
        if problems:
            raise AllAttemptsFailed(problems)
        raise NoAddresses(failure)
    try:
        return await connect_first(v6_addresses, connect, close)
    except AllAttemptsFailed as again:
        raise AllAttemptsFailed(problems + again.problems) from None


async def _first_addresses(
    v4_task: asyncio.Future[list[str]], v6_task: asyncio.Future[list[str]], delay: float
) -> list[str]:
    await asyncio.wait({v4_task, v6_task}, return_when=asyncio.FIRST_COMPLETED)
    if v4_task.done() and not v6_task.done() and _addresses(v4_task):
        await asyncio.wait({v6_task}, timeout=delay)
    else:
        await asyncio.wait({v4_task, v6_task})
    addresses = interleave(_addresses(v6_task), _addresses(v4_task))
    if addresses:
        return addresses
    raise NoAddresses(_failure(v4_task) or _failure(v6_task))


async def connect_first(
    addresses: Sequence[str],
    connect: Callable[[str], Awaitable[T]],
    close: Callable[[T], Awaitable[None]],
    attempt_delay: float = CONNECTION_ATTEMPT_DELAY,
) -> T:
    """Staggered attempts over `addresses`; the first connection wins, the others are closed."""
    if len(addresses) == 1:  # nothing to stagger: no task, no wait set (most policy hosts)
        try:
            return await connect(addresses[0])
        except Exception as exc:
            raise AllAttemptsFailed([f"{_where(addresses[0])}: {_describe(exc)}"]) from None
    problems: dict[str, str] = {}
    pending: dict[asyncio.Task[T], str] = {}
    remaining = list(addresses)
    order = {address: index for index, address in enumerate(addresses)}
    winner: T | None = None
    try:
        while winner is None and (remaining or pending):
            if remaining:
                address = remaining.pop(0)
                pending[asyncio.ensure_future(connect(address))] = address
            timeout = attempt_delay if remaining else None
            done, _ = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            # Several done in one turn (a loop delayed past the attempt delay): the earlier
            # address in the preferred order wins, so the choice does not depend on timing.
            for task in sorted(done, key=lambda d: order[pending[d]]):
                address = pending.pop(task)
                if task.exception() is None and winner is None:
                    winner = task.result()
                elif task.exception() is None:
                    await close(task.result())
                else:
                    problems[address] = _describe(task.exception())
    finally:
        for task in pending:
            task.cancel()
        late = await asyncio.gather(*pending, return_exceptions=True)
        for connection in late:
            if not isinstance(connection, BaseException):
                await close(connection)
    if winner is None:
        raise AllAttemptsFailed([f"{_where(a)}: {problems[a]}" for a in addresses if a in problems])
    return winner


def _addresses(task: asyncio.Future[list[str]]) -> list[str]:
    if not task.done() or task.cancelled() or task.exception() is not None:
        return []
    return task.result()


def _failure(task: asyncio.Future[list[str]]) -> DnsLookupError | None:
    if task.done() and not task.cancelled():
        error = task.exception()
        if isinstance(error, DnsLookupError):
            return error
    return None


def _describe(error: BaseException | None) -> str:
    return str(error) or type(error).__name__


def _where(address: str) -> str:
    return f"[{address}]" if ":" in address else address
