"""The order and limits of trying a policy host's addresses (address_attempts.py), with
scripted attempts in place of connections: which address each try may use, when a silent one
gets a neighbour, and the error when none answers well."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest

from mta_sts_policyd.discovery.address_attempts import AddressAttempts, Attempt
from mta_sts_policyd.discovery.http_transport import NoOtherAddress
from mta_sts_policyd.errors import PolicyFetchError, ResultType

Script = dict[str, str]
"""Address -> what it does once connected: 'ok', 'bad', 'silent'."""


def attempts_on(
    addresses: list[str], script: Script, seen: list[list[str]], *, limit: int = 4
) -> AddressAttempts[str]:
    async def one_try(exclude: Collection[str], attempt: Attempt) -> str:
        seen.append(sorted(exclude))
        left = [a for a in addresses if a not in exclude]
        if not left:
            raise NoOtherAddress("no other address")
        attempt.mark_connected(left[0])
        behaviour = script[left[0]]
        if behaviour == "bad":
            raise PolicyFetchError(f"{left[0]} answered badly", ResultType.STS_WEBPKI_INVALID)
        if behaviour == "silent":
            await asyncio.sleep(3600)
        return f"policy from {left[0]}"

    def error_of(exc: Exception) -> PolicyFetchError:
        assert isinstance(exc, PolicyFetchError)
        return exc

    return AddressAttempts(one_try, error_of, limit=limit, stall_after=0.05)


async def test_a_bad_address_moves_on_leaving_it_out() -> None:
    seen: list[list[str]] = []
    got = await attempts_on(["a", "b"], {"a": "bad", "b": "ok"}, seen).run()
    assert got == "policy from b" and seen == [[], ["a"]]


async def test_a_silent_address_gets_a_neighbour_and_is_cancelled_when_it_answers() -> None:
    seen: list[list[str]] = []
    got = await asyncio.wait_for(attempts_on(["a", "b"], {"a": "silent", "b": "ok"}, seen).run(), 2)
    assert got == "policy from b" and seen == [[], ["a"]]
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_every_address_bad_gives_the_first_error_naming_the_others() -> None:
    seen: list[list[str]] = []
    with pytest.raises(PolicyFetchError) as caught:
        await attempts_on(["a", "b"], {"a": "bad", "b": "bad"}, seen).run()
    assert caught.value.reason == "a answered badly (at a); also b: b answered badly"
    assert caught.value.result_type is ResultType.STS_WEBPKI_INVALID
    assert seen == [[], ["a"], ["a", "b"]]  # the third try found no other address


async def test_no_more_tries_than_the_limit() -> None:
    seen: list[list[str]] = []
    addresses = ["a", "b", "c", "d", "e"]
    with pytest.raises(PolicyFetchError) as caught:
        await attempts_on(addresses, dict.fromkeys(addresses, "bad"), seen, limit=3).run()
    assert len(seen) == 3 and "also b: " in caught.value.reason
    assert "d answered" not in caught.value.reason


async def test_a_single_silent_address_is_waited_for_and_named_at_the_deadline() -> None:
    seen: list[list[str]] = []
    attempts = attempts_on(["a"], {"a": "silent"}, seen)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await attempts.run()
    assert seen == [[], ["a"]]  # a neighbour was asked for once; there was none
    assert attempts.late("no answer in time").reason == "no answer in time"


async def test_a_failure_before_connecting_ends_the_list() -> None:
    seen: list[list[str]] = []

    async def one_try(exclude: Collection[str], attempt: Attempt) -> str:
        seen.append(sorted(exclude))
        raise PolicyFetchError("cannot connect to any address")

    attempts = AddressAttempts(one_try, lambda e: PolicyFetchError(str(e)), limit=4, stall_after=1)
    with pytest.raises(PolicyFetchError, match="cannot connect to any address"):
        await attempts.run()
    assert seen == [[]]
