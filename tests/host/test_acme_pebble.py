"""Certificates issued for real by Debian's pebble ACME server, tls-alpn-01 answered by the host.

pebble's "always valid" shortcut is off: it resolves the name through the test's DNS server,
connects to the host's serving port with ALPN acme-tls/1 and checks the validation certificate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from acme import errors as acme_errors

from mta_sts_policyd.host.acme_issuer import AcmeFailure, AcmeIssuer
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.host.run import HostSettings, PolicyHost
from support.pebble import NAME, POLICY, Pebble, fetch, wait_port


@pytest.fixture
async def served(
    tmp_path: Path, pebble_world: tuple[Pebble, int]
) -> AsyncIterator[tuple[PolicyHost, AcmeIssuer, Pebble, int]]:
    pebble, port = pebble_world
    (tmp_path / "policies" / "a.test" / POLICY_FILE).parent.mkdir(parents=True)
    (tmp_path / "policies" / "a.test" / POLICY_FILE).write_bytes(POLICY)
    issuer = AcmeIssuer(pebble.directory, tmp_path / "acme", ca_bundle=str(pebble.ca_file))
    settings = HostSettings((("127.0.0.1", port),), tmp_path / "policies", (issuer.certs_dir,), 0.2)
    host = PolicyHost(settings, issuer.challenge_for)
    task = asyncio.create_task(host.serve())
    await asyncio.to_thread(wait_port, port)
    yield host, issuer, pebble, port
    host.stop()
    await task


@pytest.mark.slow
async def test_pebble_issues_and_the_host_serves_with_it(
    served: tuple[PolicyHost, AcmeIssuer, Pebble, int],
) -> None:
    host, issuer, pebble, port = served
    folder = await asyncio.to_thread(issuer.issue, NAME)
    assert (folder / "fullchain.pem").stat().st_mode & 0o777 == 0o600
    assert (folder / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert "set VALID by completed challenge" in pebble.log.read_text()
    host.reload()
    response = await fetch(port, await asyncio.to_thread(pebble.root_pem))
    assert (response.status_code, response.content) == (200, POLICY)
    first = host.certificates.not_after(NAME)
    assert first is not None
    await asyncio.to_thread(issuer.issue, NAME)  # renewal: the same account, a new certificate
    host.reload()
    assert (await fetch(port, await asyncio.to_thread(pebble.root_pem))).status_code == 200
    assert issuer.pending == {}


@pytest.mark.slow
async def test_an_unanswered_challenge_gets_no_certificate(
    tmp_path: Path, pebble_world: tuple[Pebble, int]
) -> None:
    """The CA really validates: a host that does not answer tls-alpn-01 gets nothing."""
    pebble, port = pebble_world
    issuer = AcmeIssuer(pebble.directory, tmp_path / "acme", ca_bundle=str(pebble.ca_file))
    settings = HostSettings((("127.0.0.1", port),), tmp_path, (issuer.certs_dir,), 0.2)
    host = PolicyHost(settings, challenges=None)  # the issuer's challenges are never served
    task = asyncio.create_task(host.serve())
    await asyncio.to_thread(wait_port, port)
    try:
        with pytest.raises(AcmeFailure) as failed:  # the library's error, as its cause
            await asyncio.to_thread(issuer.issue, "mta-sts.b.test", 30.0)
        assert isinstance(failed.value.__cause__, acme_errors.Error)
    finally:
        host.stop()
        await task
    assert not (issuer.certs_dir / "mta-sts.b.test").exists()
    assert issuer.pending == {}
