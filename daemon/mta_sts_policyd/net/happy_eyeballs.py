"""Connect to the first address that answers, IPv6 and IPv4 raced (RFC 8305, Happy Eyeballs v2).

Why: a cold policy lookup is a chain of round trips that Postfix waits for. The A and AAAA
questions run in parallel; connection attempts start as soon as addresses are known and are
staggered by the connection attempt delay instead of waiting for each one to fail, so a dead
address (or a broken address family) costs 250 ms, not a connect timeout.

Rules kept from RFC 8305: AAAA preferred, but once A has answered, AAAA gets at most the
resolution delay (§3, 50 ms) before IPv4 attempts start; addresses interleaved by family, IPv6
first (§4); a new attempt every connection attempt delay (§5, 250 ms) or at once when the
previous one failed; the first established connection wins and the others are closed.
Addresses of the other family that come later join the race when the known ones have not
connected within the attempt delay. One departure, `connect_v4_first`: when the A question
went out early (with the `_mta-sts` TXT one, for a cold lookup), IPv4 is tried at once and
AAAA is only asked when IPv4 has not connected within the attempt delay, or failed.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

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
    """Resolve and connect; AAAA answers that come after the attempts began join the race
    when no address known then has connected within the attempt delay, or all failed (a
    dual-stack host whose IPv4 refuses or stays silent still works)."""
    v4_task, v6_task = asyncio.ensure_future(v4), asyncio.ensure_future(v6)
    try:
        addresses = await _first_addresses(v4_task, v6_task, resolution_delay)
        late = None if v6_task.done() else functools.partial(_late_addresses, v6_task)
        return await connect_first(addresses, connect, close, more=late)
    finally:
        v6_task.cancel()
        v4_task.cancel()


async def connect_v4_first(
    v4: Awaitable[list[str]],
    ask_v6: Callable[[], Awaitable[list[str]]],
    connect: Callable[[str], Awaitable[T]],
    close: Callable[[T], Awaitable[None]],
    attempt_delay: float = CONNECTION_ATTEMPT_DELAY,
) -> T:
    """`connect_happy` with no resolution delay, for an A question asked early (beside the
    TXT one): IPv4 attempts start as soon as A has addresses; AAAA is only asked (`ask_v6`)
    when A has none, or no IPv4 attempt connected within the attempt delay, or all failed.
    Almost every policy host connects on IPv4 at once, so asking AAAA beside it cost each
    cold fetch a DNS question (and in a burst, the CPU of every other lookup's question) for
    an answer that was thrown away; a host whose IPv4 fails pays one round trip more."""
    failure: DnsLookupError | None = None
    try:
        v4_addresses = await v4
    except DnsLookupError as exc:
        failure, v4_addresses = exc, []
    if v4_addresses:
        return await connect_first(v4_addresses, connect, close, attempt_delay, more=ask_v6)
    try:
        v6_addresses = await ask_v6()
    except DnsLookupError as exc:
        failure, v6_addresses = failure or exc, []
    if not v6_addresses:
        raise NoAddresses(failure)
    return await connect_first(v6_addresses, connect, close, attempt_delay)


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


async def _late_addresses(task: asyncio.Future[list[str]]) -> list[str]:
    await asyncio.wait({task})
    return _addresses(task)


async def connect_first(
    addresses: Sequence[str],
    connect: Callable[[str], Awaitable[T]],
    close: Callable[[T], Awaitable[None]],
    attempt_delay: float = CONNECTION_ATTEMPT_DELAY,
    *,
    more: Callable[[], Awaitable[list[str]]] | None = None,
) -> T:
    """Staggered attempts over `addresses`; the first connection wins, the others are closed.

    `more` gives further addresses (the other family's), asked at most once: when every known
    address has an attempt and none connected within the attempt delay, or all failed. Its
    addresses join the race; a DNS failure there only means there are none.
    """
    if len(addresses) == 1 and more is None:  # nothing to stagger: no task, no wait set
        try:
            return await connect(addresses[0])
        except Exception as exc:
            raise AllAttemptsFailed([f"{_where(addresses[0])}: {_describe(exc)}"]) from None
    problems: dict[str, str] = {}
    pending: dict[asyncio.Task[T], str] = {}
    remaining = list(addresses)
    order = {address: index for index, address in enumerate(addresses)}
    lookup: asyncio.Future[list[str]] | None = None
    winner: T | None = None
    move_on = True  # start the next attempt (or ask `more`): at first, on a failure, on a stall
    try:
        while winner is None and (remaining or pending or lookup is not None or more is not None):
            if move_on and remaining:
                address = remaining.pop(0)
                pending[asyncio.ensure_future(connect(address))] = address
            elif move_on and more is not None:
                lookup, more = asyncio.ensure_future(more()), None
            if not pending and lookup is None:
                break
            waiting: set[asyncio.Future[Any]] = {*pending, *([lookup] if lookup else [])}
            timeout = attempt_delay if remaining or more is not None else None
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            move_on = not done
            if lookup is not None and lookup in done:
                for address in _addresses(lookup):
                    if address not in order:
                        order[address] = len(order)
                        remaining.append(address)
                lookup, move_on = None, True
            # Several done in one turn (a loop delayed past the attempt delay): the earlier
            # address in the preferred order wins, so the choice does not depend on timing.
            for task in sorted(pending.keys() & done, key=lambda d: order[pending[d]]):
                address = pending.pop(task)
                if task.exception() is None and winner is None:
                    winner = task.result()
                elif task.exception() is None:
                    await close(task.result())
                else:
                    problems[address] = _describe(task.exception())
                    move_on = True
    finally:
        if lookup is not None:
            lookup.cancel()
        for task in pending:
            task.cancel()
        late = await asyncio.gather(*pending, return_exceptions=True)
        for connection in late:
            if not isinstance(connection, BaseException):
                await close(connection)
    if winner is None:
        raise AllAttemptsFailed([f"{_where(a)}: {problems[a]}" for a in order if a in problems])
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
