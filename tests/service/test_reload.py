"""SIGHUP re-applies [discovery]: later lookups use the new nameservers (in-process daemon)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import trustme

from mta_sts_policyd.config.settings import load_config
from mta_sts_policyd.postfix.client import SocketmapClient
from mta_sts_policyd.service.daemon import Daemon
from support.dns_server import DnsServer
from support.https_server import HttpsServer
from support.ports import free_port

POLICY = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"


def write_config(path: Path, nameserver: str, https: HttpsServer, state: Path, port: int) -> None:
    path.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\nsts_attributes = false\ndane = "off"\n'
        f'[discovery]\nnameservers = ["{nameserver}"]\nca_file = "{https.ca_pem_path}"\n'
        f"https_port = {https.port}\ndns_timeout = 1.0\n"
        f'[cache]\nstate_dir = "{state}"\n'
    )


def ask(address: str, key: str) -> bytes:
    with SocketmapClient(address) as client:
        return client.query(key)


async def test_sighup_switches_nameservers(tmp_path: Path, trust_ca: trustme.CA) -> None:
    with DnsServer() as old_dns, DnsServer() as new_dns, HttpsServer(trust_ca) as https:
        new_dns.set_txt("_mta-sts.example.test", "v=STSv1; id=1")
        new_dns.set_a("mta-sts.example.test", "127.0.0.1")
        https.set_policy("example.test", POLICY)
        config_path = tmp_path / "config.toml"
        port = free_port()
        write_config(config_path, old_dns.nameserver, https, tmp_path / "state", port)
        daemon = Daemon(load_config(config_path), config_path=config_path)
        await daemon.start()
        try:
            address = "{}:{}".format(*daemon.bound[0])
            assert await asyncio.to_thread(ask, address, "example.test") == b"NOTFOUND "
            write_config(config_path, new_dns.nameserver, https, tmp_path / "state", port)
            daemon.reload()
            new_dns.set_txt("_mta-sts.other.test", "v=STSv1; id=1")
            new_dns.set_a("mta-sts.other.test", "127.0.0.1")
            https.set_policy("other.test", POLICY)
            reply = await asyncio.to_thread(ask, address, "other.test")
            assert reply.startswith(b"OK secure match=mail.example.test")
            assert new_dns.query_count("_mta-sts.other.test") == 1
            assert old_dns.query_count("_mta-sts.other.test") == 0
        finally:
            await daemon.stop()


async def test_an_ipv6_nameserver_with_a_port_like_last_group_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`::1:5353` is the address ::1:5353 on port 53: said at start and at each reload that
    keeps it (`check-config` says the same); the bracketed form is silent."""
    config_path = tmp_path / "config.toml"
    state, port = tmp_path / "state", free_port()

    def write(nameserver: str) -> None:
        config_path.write_text(
            f'[server]\nlisten = ["127.0.0.1:{port}"]\n[cache]\nstate_dir = "{state}"\n'
            f'[discovery]\nnameservers = ["127.0.0.1", "{nameserver}"]\n'
        )

    def warnings() -> list[str]:
        found = [r.getMessage() for r in caplog.records if "event=config-warning" in r.msg]
        caplog.clear()
        return found

    write("::1:5353")
    caplog.set_level(logging.WARNING)
    daemon = Daemon(load_config(config_path), config_path=config_path)
    await daemon.start()
    try:
        [started] = warnings()
        assert started.startswith("event=config-warning key=discovery.nameservers[1] reason=")
        assert "write [::1]:5353" in started and "port 53" in started
        write("[::1]:5353")
        daemon.reload()
        assert warnings() == []
        write("::1:5353")
        daemon.reload()
        assert len(warnings()) == 1
    finally:
        await daemon.stop()


async def test_sighup_reads_a_ca_bundle_edited_in_place(
    tmp_path: Path, trust_ca: trustme.CA
) -> None:
    """Same configuration, same `ca_file` path, new contents (a CA appended): the reload reads
    it again; the old context would refuse the policy host until a restart."""
    other_ca = trustme.CA()
    with DnsServer() as dns, HttpsServer(other_ca) as https:
        dns.set_txt("_mta-sts.example.test", "v=STSv1; id=1")
        dns.set_a("mta-sts.example.test", "127.0.0.1")
        https.set_policy("example.test", POLICY)
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(trust_ca.cert_pem.bytes())  # not the CA the host's certificate is from
        config_path = tmp_path / "config.toml"
        port = free_port()
        write_config(config_path, dns.nameserver, https, tmp_path / "state", port)
        config_path.write_text(config_path.read_text().replace(https.ca_pem_path, str(bundle)))
        daemon = Daemon(load_config(config_path), config_path=config_path)
        await daemon.start()
        try:
            address = "{}:{}".format(*daemon.bound[0])
            assert await asyncio.to_thread(ask, address, "example.test") == b"NOTFOUND "
            bundle.write_bytes(trust_ca.cert_pem.bytes() + other_ca.cert_pem.bytes())
            daemon.reload()
            assert await daemon.resolver.refresh_domain("example.test") is not None
            reply = await asyncio.to_thread(ask, address, "example.test")
            assert reply.startswith(b"OK secure match=mail.example.test")
        finally:
            await daemon.stop()
