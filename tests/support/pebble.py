"""Debian's pebble ACME test server on loopback, for the policy host's ACME tests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import trustme

from support.dns_server import DnsServer
from support.ports import free_port

PEBBLE = shutil.which("pebble")
NAME = "mta-sts.a.test"
POLICY = b"version: STSv1\nmode: testing\nmx: mx.a.test\nmax_age: 86400\n"


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class Pebble:
    def __init__(
        self,
        root: Path,
        ca: trustme.CA,
        dns: DnsServer,
        tls_port: int,
        http_port: int | None = None,
        validity_seconds: int | None = None,
    ) -> None:
        """`http_port`: where pebble validates http-01; `validity_seconds`: the lifetime of the
        certificates it issues (Debian's pebble 2.4 key certificateValidityPeriod)."""
        self.port, self.management = free_port(), free_port()
        self.ca_file = root / "pebble-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        leaf.cert_chain_pems[0].write_to_path(str(root / "pebble.pem"))
        leaf.private_key_pem.write_to_path(str(root / "pebble.key"))
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.port}",
                "managementListenAddress": f"127.0.0.1:{self.management}",
                "certificate": str(root / "pebble.pem"),
                "privateKey": str(root / "pebble.key"),
                "httpPort": http_port or free_port(),
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        if validity_seconds is not None:
            config["pebble"]["certificateValidityPeriod"] = validity_seconds
        (root / "pebble.json").write_text(json.dumps(config))
        env = dict(
            os.environ,
            PEBBLE_VA_NOSLEEP="1",
            PEBBLE_WFE_NONCEREJECT="0",
            PEBBLE_VA_ALWAYS_VALID="0",
            PEBBLE_AUTHZREUSE="0",  # every order is validated again (renewals too)
        )
        host, port = dns.address
        self.process = subprocess.Popen(
            [str(PEBBLE), "-config", str(root / "pebble.json"), "-dnsserver", f"{host}:{port}"],
            env=env,
            stdout=(root / "pebble.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.log = root / "pebble.log"
        wait_port(self.port)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root_pem(self) -> bytes:
        url = f"https://127.0.0.1:{self.management}/roots/0"
        return httpx.get(url, verify=ssl.create_default_context(cafile=str(self.ca_file))).content

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def fetch(port: int, root_pem: bytes, name: str = NAME) -> httpx.Response:
    context = ssl.create_default_context(cadata=root_pem.decode())
    async with httpx.AsyncClient(verify=context) as client:
        return await client.get(
            f"https://127.0.0.1:{port}/.well-known/mta-sts.txt",
            headers={"Host": name},
            extensions={"sni_hostname": name},
        )
