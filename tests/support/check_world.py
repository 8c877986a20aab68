"""Complete own domains on loopback for `check`/`monitor` tests: DNS, policy hosts on several
127.0.0.x addresses sharing one HTTPS port, and SMTP MX servers sharing one SMTP port.

SMTP servers run on the test's event loop, so async tests call the command in a thread
(`await world.run_check(...)`), which leaves the loop free to serve them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import trustme

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.sts import parse_policy
from mta_sts_policyd.tools.policy_id import policy_id

from .certs import CertKind
from .dns_server import DnsServer
from .https_server import HttpsServer, Site
from .ports import free_port
from .smtp_server import LoopbackSmtpServer, SmtpBehaviour

MxKind = CertKind | str
"""A certificate kind, or "no-starttls"."""


def _set_addresses(dns: DnsServer, name: str, addresses: Sequence[str]) -> None:
    """A and AAAA records of `name` (each type replaced; an empty list removes it)."""
    dns.set_a(name, *(a for a in addresses if ":" not in a))
    dns.set_aaaa(name, *(a for a in addresses if ":" in a))


def enforce_policy(*mx: str, mode: str = "enforce", max_age: int = 604800) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "".join(f"{line}\r\n" for line in lines)


def derived_id(policy: str | bytes) -> str:
    return policy_id(parse_policy(policy.encode() if isinstance(policy, str) else policy))


class CheckWorld:
    HTTPS_ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "::1")
    MX_ADDRESSES = (*(f"127.0.0.{n}" for n in range(10, 40)), "::1")

    def __init__(self, dns: DnsServer, ca: trustme.CA) -> None:
        self.dns = dns
        self.ca = ca
        self.https_port = free_port(self.HTTPS_ADDRESSES)
        self.https = {a: HttpsServer(ca, a, port=self.https_port) for a in self.HTTPS_ADDRESSES}
        for server in self.https.values():
            server.start()
        self.ca_file = self.https["127.0.0.1"].ca_pem_path
        self.smtp_port = 0
        self._smtp: list[LoopbackSmtpServer] = []
        self._next_mx = 10
        self._mx_addresses: dict[str, list[str]] = {}

    def close(self) -> None:
        for server in self.https.values():
            server.close()

    # --- publishing ---------------------------------------------------------------------------
    def publish(
        self,
        domain: str,
        policy: str | bytes | None,
        *,
        txt: str | None = "derived",
        addresses: Sequence[str] = ("127.0.0.1",),
        mx: Sequence[str] = (),
        tlsrpt: str | None = "default",
        **site: Any,
    ) -> None:
        """TXT, mta-sts A records, the policy on each address, MX records and TLS-RPT."""
        if txt == "derived":
            txt = f"v=STSv1; id={derived_id(policy)}" if policy is not None else None
        if txt is not None:
            self.dns.set_txt(f"_mta-sts.{domain}", txt)
        _set_addresses(self.dns, f"mta-sts.{domain}", addresses)
        if policy is not None:
            for address in addresses:
                self.serve(address, domain, policy, **site)
        if mx:
            self.dns.set_mx(domain, *((10 * (i + 1), h) for i, h in enumerate(mx)))
        if tlsrpt == "default":
            tlsrpt = f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"
        if tlsrpt is not None:
            self.dns.set_txt(f"_smtp._tls.{domain}", tlsrpt)

    def serve(self, address: str, domain: str, policy: str | bytes, **site: Any) -> Site:
        return self.https[address].set_policy(domain, policy, **site)

    async def mx_server(
        self, host: str, kind: MxKind = "valid", *, address: str | None = None
    ) -> LoopbackSmtpServer:
        """An SMTP server for MX `host` on its own 127.0.0.x address (or `address`, e.g. ::1);
        the host's A/AAAA records list every address a server was started on for it."""
        if address is None:
            address = f"127.0.0.{self._next_mx}"
            self._next_mx += 1
        if self.smtp_port == 0:
            self.smtp_port = free_port(self.MX_ADDRESSES)
        certs = self.https["127.0.0.1"].certs
        tls = None
        if kind != "no-starttls":
            names = certs.names_for(kind, host)  # type: ignore[arg-type]
            tls = certs.context(kind, names)  # type: ignore[arg-type]
        behaviour = SmtpBehaviour(tls=tls, banner=f"220 {host} ESMTP test", helo_name=host)
        server = LoopbackSmtpServer(behaviour, address, self.smtp_port)
        await server.__aenter__()
        self._smtp.append(server)
        self._mx_addresses.setdefault(host, []).append(address)
        _set_addresses(self.dns, host, self._mx_addresses[host])
        return server

    async def close_smtp(self) -> None:
        for server in self._smtp:
            await server.__aexit__(None, None, None)

    # --- running --------------------------------------------------------------------------------
    def base_args(self) -> list[str]:
        return [
            "--allow-private", "--nameserver", self.dns.nameserver, "--ca-file", self.ca_file,
            "--https-port", str(self.https_port), "--smtp-port", str(self.smtp_port or 1),
            "--timeout", "3",
        ]  # fmt: skip

    async def run_check(self, *args: str) -> tuple[int, dict[str, Any]]:
        """`check --json` in a worker thread; (exit code, parsed JSON)."""
        import io
        from contextlib import redirect_stdout

        buffer = io.StringIO()

        def call() -> int:
            with redirect_stdout(buffer):
                return main(["check", "--json", *self.base_args(), *args])

        code = await asyncio.to_thread(call)
        return code, json.loads(buffer.getvalue())


@contextlib.asynccontextmanager
async def check_world(dns: DnsServer, ca: trustme.CA) -> AsyncIterator[CheckWorld]:
    world = CheckWorld(dns, ca)
    try:
        yield world
    finally:
        await world.close_smtp()
        world.close()


def codes(report: dict[str, Any], domain: str | None = None) -> set[str]:
    """The finding codes of one domain (the only one when `domain` is None)."""
    domains = report["domains"]
    entry = domains[0] if domain is None else next(d for d in domains if d["domain"] == domain)
    return {f["code"] for f in entry["findings"]}


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path
