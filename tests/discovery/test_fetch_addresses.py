"""A policy host address that answers badly does not end the fetch while the host has others.

Two loopback HTTPS servers on one port (127.0.0.2 and 127.0.0.1, or ::1) stand for a host
whose addresses reach different servers: a stale pool member, or the server behind one family
left behind in a migration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import trustme

from conftest import StsWorld
from mta_sts_policyd.discovery.policy_fetch import FetchResult
from mta_sts_policyd.errors import PolicyFetchError, ResultType
from support.https_server import HttpsServer
from support.resetting_server import resetting_server, silent_server

D = "example.test"
HOST = f"mta-sts.{D}"
POLICY = b"version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"


@pytest.fixture
def second(trust_ca: trustme.CA, sts_world: StsWorld) -> Iterator[HttpsServer]:
    """Another server on 127.0.0.2, on the port of the world's own (127.0.0.1)."""
    with HttpsServer(trust_ca, host="127.0.0.2", port=sts_world.https.port) as server:
        yield server


@pytest.mark.parametrize("bad", ["expired", "not-found"])
async def test_a_bad_first_address_moves_on_to_the_next(
    trust_ca: trustme.CA, sts_world: StsWorld, bad: str
) -> None:
    """::1 answers badly, 127.0.0.1 serves the policy; A and AAAA raced, IPv6 goes first."""
    try:
        v6 = HttpsServer(trust_ca, host="::1", port=sts_world.https.port).__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        if bad == "expired":
            v6.set_policy(D, POLICY, cert="expired")
        else:
            v6.set_policy(D, POLICY, status=404)
        sts_world.publish(D, POLICY)
        sts_world.dns.set_aaaa(HOST, "::1")
        async with sts_world.discovery() as client:
            fetched = await client.fetch_policy(D)
    finally:
        v6.__exit__(None, None, None)
    assert fetched.policy.mx == ("mail.example.test",)
    assert sts_world.https.request_count(HOST) == 1
    assert v6.request_count(HOST) == (1 if bad == "not-found" else 0)


@pytest.fixture
def dual_stack_host(trust_ca: trustme.CA, sts_world: StsWorld) -> Iterator[HttpsServer]:
    """A policy host at 127.0.0.2 (where the test puts a bad server) and ::1, which serves the
    policy; yields the ::1 server."""
    try:
        v6 = HttpsServer(trust_ca, host="::1").__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        v6.set_policy(D, POLICY)
        sts_world.publish(D, None)
        sts_world.dns.set_a(HOST, "127.0.0.2")
        sts_world.dns.set_aaaa(HOST, "::1")
        yield v6
    finally:
        v6.__exit__(None, None, None)


async def cold_fetch(
    sts_world: StsWorld, v6: HttpsServer, **overrides: object
) -> tuple[FetchResult, float]:
    """The cold path (TXT and A together, IPv4 first): the policy and the fetch's seconds."""
    async with sts_world.discovery(https_port=v6.port, ca_file=v6.ca_pem_path, **overrides) as c:
        await c.lookup_txt(D, fetch_likely=True)
        started = time.monotonic()
        fetched = await c.fetch_policy(D)
        return fetched, time.monotonic() - started


async def test_after_the_early_a_a_resetting_ipv4_falls_back_to_ipv6(
    sts_world: StsWorld, dual_stack_host: HttpsServer
) -> None:
    """IPv4 connects, then resets; the AAAA address serves the policy."""
    with resetting_server("127.0.0.2", dual_stack_host.port):  # asserts it was connected to
        fetched, _ = await cold_fetch(sts_world, dual_stack_host)
    assert fetched.policy.mx == ("mail.example.test",)


async def test_when_every_address_fails_the_first_one_is_the_error_naming_the_others(
    sts_world: StsWorld, second: HttpsServer
) -> None:
    sts_world.publish(D, POLICY, status=500)
    second.set_policy(D, POLICY, cert="expired")
    sts_world.dns.set_a(HOST, "127.0.0.2", "127.0.0.1")
    async with sts_world.discovery() as client:
        with pytest.raises(PolicyFetchError) as caught:
            await client.fetch_policy(D)
    error = caught.value
    expired = f"certificate of {HOST} not accepted"
    if "(at 127.0.0.2)" in error.reason:  # the order the addresses were tried in
        assert error.result_type is ResultType.STS_WEBPKI_INVALID
        assert error.reason.startswith(expired) and "also 127.0.0.1: " in error.reason
        assert "HTTP 500" in error.reason
    else:
        assert error.result_type is ResultType.STS_POLICY_FETCH_ERROR
        assert "HTTP 500" in error.reason.partition("(at 127.0.0.1)")[0]
        assert f"also 127.0.0.2: {expired}" in error.reason


async def test_one_address_failing_is_its_own_error_unchanged(sts_world: StsWorld) -> None:
    sts_world.publish(D, POLICY, status=404)
    async with sts_world.discovery() as client:
        with pytest.raises(PolicyFetchError) as caught:
            await client.fetch_policy(D)
    assert "also" not in caught.value.reason and "404" in caught.value.reason


async def test_a_silent_first_address_does_not_take_the_whole_deadline(
    sts_world: StsWorld, dual_stack_host: HttpsServer
) -> None:
    """IPv4 (the early A) accepts and never answers; after a quarter of the deadline the AAAA
    address is tried beside it and serves the policy, well within it."""
    with silent_server("127.0.0.2", dual_stack_host.port):  # asserts it was connected to
        fetched, took = await cold_fetch(sts_world, dual_stack_host, fetch_timeout=4.0)
    assert fetched.policy.mx == ("mail.example.test",)
    assert 1.0 <= took < 3.0  # one quarter of 4 s alone, then the next address


async def test_a_single_silent_address_is_named_when_the_deadline_ends(
    sts_world: StsWorld,
) -> None:
    sts_world.publish(D, None)
    sts_world.dns.set_a(HOST, "127.0.0.2")
    with silent_server("127.0.0.2") as port:
        async with sts_world.discovery(https_port=port, fetch_timeout=1.0) as client:
            with pytest.raises(PolicyFetchError) as caught:
                await client.fetch_policy(D)
    assert caught.value.reason == (
        f"https://{HOST}/.well-known/mta-sts.txt: no complete answer within 1 s"
    )
