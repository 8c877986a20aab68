"""http-01 (RFC 8555 §8.3), the operator's alternative to tls-alpn-01: Debian's pebble fetches
http://mta-sts.a.test:PORT/.well-known/acme-challenge/TOKEN from the host's plain-HTTP listener
(its "always valid" shortcut is off), and that listener serves nothing else, never a redirect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from acme import errors as acme_errors

from mta_sts_policyd.host.acme_issuer import HTTP_01, AcmeFailure, AcmeIssuer
from mta_sts_policyd.host.run import HostSettings, PolicyHost
from support.pebble import NAME, POLICY, Pebble, fetch, wait_port
from support.ports import free_port


def write_policy(root: Path) -> Path:
    policy = root / "policies" / "a.test" / ".well-known" / "mta-sts.txt"
    policy.parent.mkdir(parents=True)
    policy.write_bytes(POLICY)
    return root / "policies"


@pytest.mark.slow
async def test_the_host_gets_its_certificate_by_http_01(
    tmp_path: Path, pebble_start: Callable[..., tuple[Pebble, int]]
) -> None:
    http_port = free_port()
    pebble, port = pebble_start(http_port=http_port)
    settings = HostSettings(
        listen=(("127.0.0.1", port),),
        policy_dir=write_policy(tmp_path),
        cert_dirs=(),
        poll_interval=0.2,
        acme_directory=pebble.directory,
        acme_names=(NAME,),
        acme_state=tmp_path / "acme",
        acme_ca_file=str(pebble.ca_file),
        acme_challenge=HTTP_01,
        http_listen=(("127.0.0.1", http_port),),
        renewal_tick=0.2,
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
        log = pebble.log.read_text()
        assert "validate w/ HTTP: http://mta-sts.a.test:" in log
        assert "set VALID by completed challenge" in log
        async with httpx.AsyncClient(follow_redirects=False) as client:
            base = f"http://127.0.0.1:{http_port}"
            for path in ("/", "/.well-known/mta-sts.txt", "/.well-known/acme-challenge/gone"):
                plain = await client.get(base + path, headers={"Host": NAME})
                assert plain.status_code == 404 and "location" not in plain.headers
    finally:
        host.stop()
        await task


@pytest.mark.slow
async def test_an_unanswered_http_01_challenge_gets_no_certificate(
    tmp_path: Path, pebble_start: Callable[..., tuple[Pebble, int]]
) -> None:
    """pebble really fetches the token: a listener that answers none of them gets nothing."""
    http_port = free_port()
    pebble, port = pebble_start(http_port=http_port)
    issuer = AcmeIssuer(pebble.directory, tmp_path / "acme", "", str(pebble.ca_file), HTTP_01)
    settings = HostSettings(
        (("127.0.0.1", port),), tmp_path, (issuer.certs_dir,), 0.2,
        http_listen=(("127.0.0.1", http_port),),
    )  # fmt: skip
    host = PolicyHost(settings, http_answer=lambda name, token: None)
    task = asyncio.create_task(host.serve())
    await asyncio.to_thread(wait_port, http_port)
    try:
        with pytest.raises(AcmeFailure) as failed:  # the library's error, as its cause
            await asyncio.to_thread(issuer.issue, NAME, 30.0)
        assert isinstance(failed.value.__cause__, acme_errors.Error)
    finally:
        host.stop()
        await task
    assert not (issuer.certs_dir / NAME).exists()
    assert issuer.http_tokens == {}


async def test_the_plain_listener_answers_a_token_only_for_its_name(tmp_path: Path) -> None:
    http_port, tls_port = free_port(), free_port()
    settings = HostSettings(
        (("127.0.0.1", tls_port),), tmp_path, (), 60.0, http_listen=(("127.0.0.1", http_port),)
    )
    open_ones = {("mta-sts.a.test", "tok-1"): "tok-1.thumbprint"}
    host = PolicyHost(settings, http_answer=lambda name, token: open_ones.get((name, token)))
    task = asyncio.create_task(host.serve())
    await asyncio.to_thread(wait_port, http_port)
    path = "/.well-known/acme-challenge/tok-1"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            ok = await client.get(path, headers={"Host": "mta-sts.a.test:80"})
            assert (ok.status_code, ok.content) == (200, b"tok-1.thumbprint")
            assert ok.headers["content-type"] == "application/octet-stream"
            for host_header, method in [("mta-sts.b.test", "GET"), ("mta-sts.a.test", "POST")]:
                other = await client.request(method, path, headers={"Host": host_header})
                assert other.status_code == 404
            big = await client.get(path, headers={"Host": NAME, "X-Big": "x" * 20_000})
            assert big.status_code in (400, 431)
    finally:
        host.stop()
        await task
