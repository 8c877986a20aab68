"""The policy host over real TLS on loopback: SNI, exact bytes, 404s, refusals and reloads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trustme

from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.host.run import HostSettings, PolicyHost
from support.certs import CertFactory, CertKind
from support.ports import free_port

POLICY_A = b"version: STSv1\r\nmode: enforce\r\nmx: mx.a.test\r\nmax_age: 604800\r\n"
POLICY_B = b"version: STSv1\nmode: testing\nmx: *.b.test\nmax_age: 86400\n"
IDLE = 0.5
"""The keep-alive idle timeout of the host under test (15 s in service)."""


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
            keepalive_timeout=IDLE,
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
    assert "mta-sts.txt" in caplog.text and "kept=last-good" in caplog.text
    said = caplog.text.count("event=policy-file-refused")
    host.reload()  # the same bad file: not said again on every poll
    assert caplog.text.count("event=policy-file-refused") == said


async def test_a_folder_that_names_no_domain_is_not_served(
    world: World, host: PolicyHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for folder in ("not a domain", "a..b"):
        world.policy(folder, POLICY_A)
    host.reload(force=True)
    assert host.documents.domains == ["a.test", "b.test"]
    assert "reason=\"folder 'not a domain' is not a domain name\"" in caplog.text
    assert "folder 'a..b' is not a domain name" in caplog.text
    said = caplog.text.count("is not a domain name")
    host.reload()  # the poll: not said again every poll_interval
    assert caplog.text.count("is not a domain name") == said


async def test_a_policy_folder_that_does_not_exist_is_said_once_and_served_once_made(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    world.policies = world.root / "later"
    server = PolicyHost(world.settings())
    server.reload()
    server.reload()
    said = [r.getMessage() for r in caplog.records if "event=policy-dir-unusable" in r.getMessage()]
    assert len(said) == 1 and f"policy_dir={world.policies}" in said[0]
    assert "reason='does not exist'" in said[0]
    world.policy("a.test", POLICY_A)
    server.reload()
    assert server.documents.domains == ["a.test"]


async def test_a_certificate_folder_without_its_key_is_said_once(
    world: World, host: PolicyHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    world.cert("mta-sts.c.test")
    (world.certs_dir / "mta-sts.c.test" / KEY_FILE).unlink()
    host.reload()
    host.reload()  # the poll: not said again
    refused = [r for r in caplog.records if "name=mta-sts.c.test" in r.getMessage()]
    assert len(refused) == 1 and "privkey.pem" in refused[0].getMessage()
    refusal = host.certificates.refusal("mta-sts.c.test")
    assert refusal is not None and "privkey.pem" in refusal.reason  # host status shows it


async def test_sighup_rereads_a_file_rewritten_within_one_mtime_tick(
    world: World, host: PolicyHost
) -> None:
    path = world.policies / "a.test" / POLICY_FILE
    stamp = path.stat().st_mtime_ns
    new = POLICY_A.replace(b"604800", b"86400")
    staged = path.with_name("staged")
    staged.write_bytes(new)
    os.utime(staged, ns=(stamp, stamp))  # as if written in the same tick as the old one
    staged.replace(path)
    host.reload()
    assert (await world.get("mta-sts.a.test")).content == POLICY_A  # the poll cannot tell
    host.reload(force=True)  # what SIGHUP does
    assert (await world.get("mta-sts.a.test")).content == new


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


async def tls_stream(
    world: World, name: str | None = "mta-sts.a.test"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = ssl.create_default_context(cafile=str(world.ca_path))
    if name is None:
        context.check_hostname = False
    return await asyncio.open_connection(
        "127.0.0.1", world.port, ssl=context, server_hostname=name or ""
    )


async def one_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
) -> bytes:
    writer.write(f"GET {target} HTTP/1.1\r\nHost: mta-sts.a.test\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


async def test_keep_alive_serves_many_requests_then_closes_when_idle(
    world: World, host: PolicyHost
) -> None:
    reader, writer = await tls_stream(world)
    for _ in range(3):
        assert await one_exchange(reader, writer, "/.well-known/mta-sts.txt") == b"HTTP/1.1 200 OK"
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), IDLE + 5) == b""  # the host closed it
    assert asyncio.get_running_loop().time() - started >= IDLE * 0.8
    writer.close()


async def test_a_connection_that_never_asks_is_closed_too(world: World, host: PolicyHost) -> None:
    reader, writer = await tls_stream(world)
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), IDLE + 5) == b""
    assert asyncio.get_running_loop().time() - started < IDLE + 2
    writer.close()


async def test_an_oversized_request_line_is_refused(world: World, host: PolicyHost) -> None:
    response = await world.get("mta-sts.a.test", path="/" + "x" * 10_000)
    assert response.status_code in (400, 414)


async def test_a_handshake_without_sni_gets_no_certificate(world: World, host: PolicyHost) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await tls_stream(world, None)


async def test_a_slow_drip_request_is_cut_off_at_the_idle_timeout(
    world: World, host: PolicyHost
) -> None:
    """A byte every 0.1 s never completes a request: the idle timer is not reset by bytes."""
    reader, writer = await tls_stream(world)
    loop = asyncio.get_running_loop()
    started = loop.time()
    request = b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.a.test\r\nX: " + b"y" * 200
    for byte in request:
        writer.write(bytes([byte]))
        await asyncio.sleep(0.1)
        if writer.transport.is_closing() or reader.at_eof():
            break
        with contextlib.suppress(TimeoutError):
            if await asyncio.wait_for(reader.read(100), 0.01) == b"":
                break
    assert loop.time() - started < IDLE + 2
    writer.close()


def write_pair(folder: Path, ca: trustme.CA, name: str, **validity: datetime) -> None:
    leaf = ca.issue_cert(name, **validity)  # type: ignore[arg-type]
    (folder / CHAIN_FILE).write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (folder / KEY_FILE).write_bytes(leaf.private_key_pem.bytes())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("key of another certificate", "KEY_VALUES_MISMATCH"),
        ("not valid yet", "not valid before"),
        ("expires before the one in use", "before the one in use"),
    ],
)
async def test_no_worse_certificate_replaces_the_one_in_use(
    world: World,
    host: PolicyHost,
    trust_ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
    change: str,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING)
    folder, now = world.certs_dir / "mta-sts.a.test", datetime.now(UTC)
    in_use = host.certificates.validity("mta-sts.a.test")
    if change == "key of another certificate":
        (folder / KEY_FILE).write_bytes(trust_ca.issue_cert("x.test").private_key_pem.bytes())
    elif change == "not valid yet":
        later = {"not_before": now + timedelta(days=1), "not_after": now + timedelta(days=90)}
        write_pair(folder, trust_ca, "mta-sts.a.test", **later)
    else:
        sooner = {"not_before": now - timedelta(days=1), "not_after": now + timedelta(days=3)}
        write_pair(folder, trust_ca, "mta-sts.a.test", **sooner)
    host.reload()
    assert (await world.get("mta-sts.a.test")).status_code == 200
    assert host.certificates.validity("mta-sts.a.test") == in_use
    assert "event=certificate-refused name=mta-sts.a.test" in caplog.text
    assert reason in caplog.text and "kept=in-use" in caplog.text
    said = caplog.text.count("event=certificate-refused")
    host.reload()  # said once per file, not on every poll
    assert caplog.text.count("event=certificate-refused") == said
