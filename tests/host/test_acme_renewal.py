"""Renewal timing (pure) and the host getting its certificate by itself at start (pebble)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.host.renewal import (
    FIRST_BACKOFF,
    MAX_BACKOFF,
    next_backoff,
    renew_after,
    stable_spread,
)
from mta_sts_policyd.host.run import HostSettings, PolicyHost
from support.pebble import NAME, POLICY, Pebble, fetch, wait_port

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_renewal_is_due_at_two_thirds_of_the_lifetime() -> None:
    assert renew_after(T0, T0 + timedelta(days=90), 0.0) == T0 + timedelta(days=60)


@given(st.floats(min_value=0, max_value=0.999), st.integers(min_value=1, max_value=3650))
def test_jitter_only_ever_renews_earlier_and_within_the_lifetime(spread: float, days: int) -> None:
    end = T0 + timedelta(days=days)
    due = renew_after(T0, end, spread)
    assert T0 < due <= T0 + (end - T0) * 2 / 3


def test_backoff_doubles_up_to_a_ceiling() -> None:
    delays = [None]
    for _ in range(12):
        delays.append(next_backoff(delays[-1]))
    assert delays[1] == FIRST_BACKOFF and delays[2] == 2 * FIRST_BACKOFF
    assert delays[-1] == MAX_BACKOFF


def test_the_spread_is_stable_per_name() -> None:
    assert stable_spread("mta-sts.a.test") == stable_spread("mta-sts.a.test")
    assert 0 <= stable_spread("x") < 1


@pytest.mark.slow
async def test_the_host_gets_its_certificate_at_start(
    tmp_path: Path, pebble_world: tuple[Pebble, int]
) -> None:
    pebble, port = pebble_world
    policy = tmp_path / "policies" / "a.test" / ".well-known" / "mta-sts.txt"
    policy.parent.mkdir(parents=True)
    policy.write_bytes(POLICY)
    settings = HostSettings(
        listen=(("127.0.0.1", port),),
        policy_dir=tmp_path / "policies",
        cert_dirs=(),
        poll_interval=0.2,
        acme_directory=pebble.directory,
        acme_names=(NAME,),
        acme_state=tmp_path / "acme",
        acme_ca_file=str(pebble.ca_file),
    )
    host = PolicyHost(settings)
    task = asyncio.create_task(host.serve())
    await asyncio.to_thread(wait_port, port)
    try:
        for _ in range(300):
            if host.certificates.not_after(NAME) is not None:
                break
            await asyncio.sleep(0.1)
        response = await fetch(port, await asyncio.to_thread(pebble.root_pem))
        assert (response.status_code, response.content) == (200, POLICY)
    finally:
        host.stop()
        await task
