"""Shared fixtures: loopback DNS and HTTPS servers, a test CA, and a Discovery wired to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trustme

from mta_sts_policyd.discovery.client import Discovery
from support.dns_server import DnsServer
from support.https_server import HttpsServer, Site

if TYPE_CHECKING:
    from support.fleet_world import FleetWorld
    from support.pebble import Pebble
    from support.redis_server import RedisServer


@pytest.fixture(scope="session")
def trust_ca() -> trustme.CA:
    """The CA the client side trusts (pass `https_server.ca_pem_path` as `ca_file`)."""
    return trustme.CA()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def https_server(trust_ca: trustme.CA) -> Iterator[HttpsServer]:
    with HttpsServer(trust_ca) as server:
        yield server


class StsWorld:
    """Publish MTA-STS domains on the loopback DNS + HTTPS servers in one call."""

    def __init__(self, dns: DnsServer, https: HttpsServer) -> None:
        self.dns = dns
        self.https = https

    def publish(
        self,
        domain: str,
        policy: bytes | str | None,
        txt: str | None = "v=STSv1; id=1",
        **site: object,
    ) -> Site | None:
        """TXT at `_mta-sts.<domain>`, `mta-sts.<domain>` -> 127.0.0.1, and the policy site."""
        if txt is not None:
            self.dns.set_txt(f"_mta-sts.{domain}", txt)
        self.dns.set_a(f"mta-sts.{domain}", "127.0.0.1")
        if policy is None:
            return None
        return self.https.set_policy(domain, policy, **site)

    def discovery(self, **overrides: object) -> Discovery:
        """A Discovery using these servers (short timeouts; override any keyword)."""
        options: dict[str, object] = {
            "nameservers": [self.dns.nameserver],
            "dns_timeout": 1.0,
            "fetch_timeout": 2.0,
            "ca_file": self.https.ca_pem_path,
            "https_port": self.https.port,
        }
        options.update(overrides)
        return Discovery(**options)  # type: ignore[arg-type]


@pytest.fixture
def sts_world(dns_server: DnsServer, https_server: HttpsServer) -> StsWorld:
    return StsWorld(dns_server, https_server)


@pytest.fixture
async def discovery(sts_world: StsWorld) -> AsyncIterator[Discovery]:
    client = sts_world.discovery()
    yield client
    await client.aclose()


@pytest.fixture
def pebble_start(
    tmp_path: Path, trust_ca: trustme.CA, dns_server: DnsServer
) -> Iterator[Callable[..., tuple[Pebble, int]]]:
    """Starts Debian's pebble (keywords: http_port, validity_seconds); returns it and the
    tls-alpn-01 port it validates on. mta-sts.a.test and mta-sts.b.test point at 127.0.0.1."""
    from support.pebble import NAME, PEBBLE, Pebble
    from support.ports import free_port

    if PEBBLE is None:
        pytest.fail("pebble not installed: .ci/setup installs Debian's pebble package")
    dns_server.set_a(NAME, "127.0.0.1")
    dns_server.set_a("mta-sts.b.test", "127.0.0.1")
    started: list[Pebble] = []

    def start(**options: int) -> tuple[Pebble, int]:
        tls_port = free_port()
        started.append(Pebble(tmp_path, trust_ca, dns_server, tls_port, **options))
        return started[-1], tls_port

    yield start
    for pebble in started:
        pebble.stop()


@pytest.fixture
def pebble_world(pebble_start: Callable[..., tuple[Pebble, int]]) -> tuple[Pebble, int]:
    return pebble_start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on loopback, stopped (killed) after the test."""
    from support.redis_server import REDIS_SERVER, RedisServer

    if REDIS_SERVER is None:
        pytest.fail("redis-server not installed: .ci/setup installs Debian's redis-server")
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def make_fleet(tmp_path: Path, trust_ca: trustme.CA) -> Iterator[Callable[..., FleetWorld]]:
    """make_fleet(nodes, **options): a started support.fleet_world.FleetWorld (shared Redis,
    loopback DNS and HTTPS, `nodes` daemon processes), stopped after the test."""
    from support.fleet_world import FleetWorld
    from support.redis_server import REDIS_SERVER

    if REDIS_SERVER is None:
        pytest.fail("redis-server not installed: .ci/setup installs Debian's redis-server")
    worlds: list[FleetWorld] = []

    def factory(nodes: int, **options: Any) -> FleetWorld:
        world = FleetWorld(tmp_path / f"fleet{len(worlds)}", trust_ca, nodes, **options)
        worlds.append(world)
        world.__enter__()
        world.start()
        return world

    yield factory
    for world in worlds:
        world.close()


@pytest.fixture(autouse=True)
def _log_handlers_reset() -> Iterator[None]:
    """A command run in-process (`monitor`, `host`) installs the project's log handler on the
    captured stderr of its test; left behind, the next test's log lines would be written to a
    closed stream. Each test starts without it."""
    yield
    import logging

    from mta_sts_policyd.service.logsetup import remove_handler

    remove_handler(logging.getLogger())
