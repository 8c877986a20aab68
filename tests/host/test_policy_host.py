"""The policy host over real TLS on loopback: SNI, exact bytes, 404s, refusals and reloads."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme

from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.host.run import HostSettings, PolicyHost
from support.certs import CertFactory, CertKind
from support.postfix_instance import free_port

POLICY_A = b"version: STSv1\r\nmode: enforce\r\nmx: mx.a.test\r\nmax_age: 604800\r\n"
POLICY_B = b"version: STSv1\nmode: testing\nmx: *.b.test\nmax_age: 86400\n"


class World:
    def __init__(self, root: Path, ca: trustme.CA) -> None:
        self.root = root
        self.policies = root / "policies"
        self.certs_dir = root / "certs"
        self.factory = CertFactory(ca, root)
        self.ca_path = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        self.port = free_port()

    def policy(self, domain: str, body: bytes) -> Path:
        path = self.policies / domain / POLICY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return path

    def cert(self, name: str, kind: CertKind = "valid") -> None:
        folder = self.certs_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CHAIN_FILE).write_bytes(
            self.factory.chain_pem(kind, self.factory.names_for(kind, name))
        )
        shutil.copy(self.root / "leaf.key", folder / KEY_FILE)

    def settings(self) -> HostSettings:
        return HostSettings(
            listen=(("127.0.0.1", self.port),),
            policy_dir=self.policies,
            cert_dirs=(self.certs_dir,),
            poll_interval=0.2,
        )

    async def get(
        self, host: str, path: str = "/.well-known/mta-sts.txt", method: str = "GET", **kw: object
    ) -> httpx.Response:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        async with httpx.AsyncClient(verify=context) as client:
            return await client.request(
                method,
                f"https://127.0.0.1:{self.port}{path}",
                headers={"Host": host, **kw.pop("headers", {})},  # type: ignore[dict-item]
                extensions={"sni_hostname": host},
                follow_redirects=False,
            )


@pytest.fixture
async def world(tmp_path: Path, trust_ca: trustme.CA) -> AsyncIterator[World]:
    w = World(tmp_path, trust_ca)
    w.policy("a.test", POLICY_A)
    w.policy("b.test", POLICY_B)
    w.cert("mta-sts.a.test")
    w.cert("mta-sts.b.test")
    yield w


@pytest.fixture
async def host(world: World) -> AsyncIterator[PolicyHost]:
    server = PolicyHost(world.settings())
    task = asyncio.create_task(server.serve())
    for _ in range(100):
        try:
            await asyncio.open_connection("127.0.0.1", world.port)
            break
        except OSError:
            await asyncio.sleep(0.02)
    yield server
    server.stop()
    await task


async def test_each_domain_gets_its_policy_byte_exact_by_sni(
    world: World, host: PolicyHost
) -> None:
    a = await world.get("mta-sts.a.test")
    b = await world.get("mta-sts.b.test")
    assert (a.status_code, a.content) == (200, POLICY_A)
    assert (b.status_code, b.content) == (200, POLICY_B)
    assert a.headers["content-type"].startswith("text/plain")


async def test_head_answers_like_get_without_a_body(world: World, host: PolicyHost) -> None:
    head = await world.get("mta-sts.a.test", method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(POLICY_A)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/.well-known/mta-sts.txt.bak"),
        ("POST", "/.well-known/mta-sts.txt"),
        ("GET", "/.well-known/../.well-known/x"),
    ],
)
async def test_anything_else_is_404_never_a_redirect(
    world: World, host: PolicyHost, method: str, path: str
) -> None:
    response = await world.get("mta-sts.a.test", path=path, method=method)
    assert response.status_code == 404
    assert "location" not in response.headers


async def test_an_unknown_name_gets_no_certificate(world: World, host: PolicyHost) -> None:
    with pytest.raises(httpx.ConnectError):
        await world.get("mta-sts.c.test")


async def test_oversized_request_headers_are_refused(world: World, host: PolicyHost) -> None:
    response = await world.get("mta-sts.a.test", headers={"X-Big": "x" * 20_000})
    assert response.status_code in (400, 431)


async def test_a_bad_policy_file_is_refused_and_the_last_good_one_served(
    world: World, host: PolicyHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    world.policy("a.test", b"version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: forever\n")
    host.reload()
    assert (await world.get("mta-sts.a.test")).content == POLICY_A
    assert "event=policy-file-refused" in caplog.text and "line=4" in caplog.text


async def test_a_new_policy_and_a_new_domain_are_picked_up_without_restart(
    world: World, host: PolicyHost
) -> None:
    new = POLICY_A.replace(b"604800", b"86400")
    world.policy("a.test", new)
    world.policy("c.test", POLICY_B)
    world.cert("mta-sts.c.test")
    await asyncio.sleep(0.6)  # the change poll
    assert (await world.get("mta-sts.a.test")).content == new
    assert (await world.get("mta-sts.c.test")).content == POLICY_B


async def test_a_worse_certificate_never_replaces_a_good_one(
    world: World, host: PolicyHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    world.cert("mta-sts.a.test", "expired")
    host.reload()
    assert (await world.get("mta-sts.a.test")).status_code == 200  # old one still serves
    world.cert("mta-sts.b.test", "wrong-name")
    host.reload()
    assert (await world.get("mta-sts.b.test")).status_code == 200
    assert caplog.text.count("event=certificate-refused") == 2
    assert "expired" in caplog.text and "does not cover mta-sts.b.test" in caplog.text


async def test_reloads_under_load_lose_no_request(world: World, host: PolicyHost) -> None:
    async def reloader() -> None:
        for i in range(20):
            world.policy("b.test", POLICY_B if i % 2 else POLICY_B.replace(b"86400", b"86401"))
            host.reload()
            await asyncio.sleep(0.01)

    results = await asyncio.gather(reloader(), *(world.get("mta-sts.a.test") for _ in range(40)))
    assert all(r.status_code == 200 and r.content == POLICY_A for r in results[1:])
