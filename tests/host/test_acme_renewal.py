"""Renewal timing (pure), the host getting its certificate by itself at start, and renewing a
short-lived one while serving (pebble)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
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
    """Two names on the allow-list: each gets its certificate, and a client trusting only
    pebble's root fetches each domain's own policy by SNI."""
    pebble, port = pebble_world
    policy_b = POLICY.replace(b"mx.a.test", b"mx.b.test")
    for domain, body in (("a.test", POLICY), ("b.test", policy_b)):
        policy = tmp_path / "policies" / domain / ".well-known" / "mta-sts.txt"
        policy.parent.mkdir(parents=True)
        policy.write_bytes(body)
    settings = HostSettings(
        listen=(("127.0.0.1", port),),
        policy_dir=tmp_path / "policies",
        cert_dirs=(),
        poll_interval=0.2,
        acme_directory=pebble.directory,
        acme_names=(NAME, "mta-sts.b.test"),
        acme_state=tmp_path / "acme",
        acme_ca_file=str(pebble.ca_file),
    )
    host = PolicyHost(settings)
    task = asyncio.create_task(host.serve())
    await asyncio.to_thread(wait_port, port)
    try:
        for _ in range(300):
            if host.certificates.names == [NAME, "mta-sts.b.test"]:
                break
            await asyncio.sleep(0.1)
        root = await asyncio.to_thread(pebble.root_pem)
        response = await fetch(port, root)
        assert (response.status_code, response.content) == (200, POLICY)
        response = await fetch(port, root, "mta-sts.b.test")
        assert (response.status_code, response.content) == (200, policy_b)
    finally:
        host.stop()
        await task


class KeptConnection:
    """One TLS connection kept alive across requests (HTTP/1.1), its certificate's serial."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.serial = x509.load_der_x509_certificate(der).serial_number

    @classmethod
    async def open(cls, port: int, root_pem: bytes) -> KeptConnection:
        context = ssl.create_default_context(cadata=root_pem.decode())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=NAME
        )
        return cls(reader, writer)

    async def get(self) -> tuple[int, bytes]:
        self.writer.write(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        body = await self.reader.readexactly(int(fields["content-length"]))
        return int(lines[0].split()[1]), body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


@pytest.mark.slow
async def test_a_short_lived_certificate_is_renewed_without_dropping_connections(
    tmp_path: Path,
    pebble_start: Callable[..., tuple[Pebble, int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pebble issues 9-second certificates; the renewal loop (a 0.2 s tick, real clock) renews
    at two thirds of that, less the jitter; new handshakes get the new certificate while a
    connection opened before keeps answering, and no request fails on the way."""
    caplog.set_level(logging.INFO)
    lifetime = 9
    pebble, port = pebble_start(validity_seconds=lifetime)
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
        renewal_tick=0.2,
    )
    host = PolicyHost(settings)
    task = asyncio.create_task(host.serve())
    await asyncio.to_thread(wait_port, port)
    kept: KeptConnection | None = None
    try:
        for _ in range(300):
            if host.certificates.validity(NAME) is not None:
                break
            await asyncio.sleep(0.05)
        first = host.certificates.validity(NAME)
        assert first is not None and first[1] - first[0] <= timedelta(seconds=lifetime)
        root = await asyncio.to_thread(pebble.root_pem)
        kept = await KeptConnection.open(port, root)
        answers: list[tuple[int, bytes]] = []
        serials = [kept.serial]
        for _ in range(100):  # 20 s at most
            fresh = await KeptConnection.open(port, root)
            answers += [await fresh.get(), await kept.get()]
            serials.append(fresh.serial)
            await fresh.close()
            if fresh.serial != kept.serial:
                break
            await asyncio.sleep(0.2)
        renewed_at = datetime.now(UTC)
        answers.append(await kept.get())  # the connection from before the renewal still works
        assert serials[-1] != serials[0], "not renewed within 20 s"
        assert set(answers) == {(200, POLICY)} and len(answers) > 10
        second = host.certificates.validity(NAME)
        assert second is not None and second[1] > first[1]
        assert "event=certificate-refused" not in caplog.text  # the pair is swapped in whole
        assert list((tmp_path / "acme" / "staging").iterdir()) == []
        due = renew_after(*first, stable_spread(NAME))
        assert due <= renewed_at <= due + timedelta(seconds=10)  # issuance takes a moment
    finally:
        if kept is not None:
            await kept.close()
        host.stop()
        await task
