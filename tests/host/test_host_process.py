"""`mta-sts-policyd host` as a real process: a SIGHUP under a steady stream of HTTPS requests
swaps the policy without a failed request, and its metrics endpoint carries per-domain gauges
from its own `host status` checks (against the test DNS server)."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trustme

from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.sts import parse_policy
from mta_sts_policyd.tools.policy_id import policy_id
from support.daemon_process import COMMAND, subprocess_env, toml_text
from support.dns_server import DnsServer
from support.pebble import wait_port
from support.ports import free_port

OLD = b"version: STSv1\nmode: testing\nmx: mx.a.test\nmax_age: 86400\n"
NEW = b"version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 604800\n"


@dataclass
class HostProcess:
    root: Path
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def policy(self, domain: str, body: bytes) -> Path:
        path = self.root / "policies" / domain / POLICY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return path

    def cert(self, ca: trustme.CA, name: str) -> None:
        leaf = ca.issue_cert(name)
        folder = self.root / "certs" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CHAIN_FILE).write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        (folder / KEY_FILE).write_bytes(leaf.private_key_pem.bytes())

    def start(self, nameserver: str) -> None:
        config = self.config(nameserver)
        self.proc = subprocess.Popen(
            [*COMMAND, "host", "-c", str(config)],
            env=subprocess_env(),
            stderr=(self.root / "host.log").open("wb"),
        )
        wait_port(self.port)

    def config(self, nameserver: str) -> Path:
        config = self.root / "config.toml"
        config.write_text(
            toml_text(
                {
                    "cache": {"state_dir": str(self.root / "state")},
                    "logging": {"target": "stderr"},
                    "discovery": {"nameservers": [nameserver], "dns_timeout": 1.0},
                    "host": {
                        "listen": [f"127.0.0.1:{self.port}"],
                        "policy_dir": str(self.root / "policies"),
                        "cert_dirs": [str(self.root / "certs")],
                        "poll_interval": 3600.0,  # only the SIGHUP re-reads
                        "metrics_listen": f"127.0.0.1:{self.metrics_port}",
                        "status_interval": 0.3,
                        "expect_addresses": ["127.0.0.1"],
                    },
                }
            )
        )
        return config

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)

    @property
    def log(self) -> str:
        return (self.root / "host.log").read_text()


@pytest.fixture
def host(tmp_path: Path, trust_ca: trustme.CA, dns_server: DnsServer) -> HostProcess:
    process = HostProcess(tmp_path)
    for domain, body in (("a.test", OLD), ("b.test", OLD)):
        process.policy(domain, body)
        process.cert(trust_ca, f"mta-sts.{domain}")
        dns_server.set_a(f"mta-sts.{domain}", "127.0.0.1")
    dns_server.set_txt("_mta-sts.a.test", f"v=STSv1; id={policy_id(parse_policy(OLD))}")
    dns_server.set_txt("_mta-sts.b.test", f"v=STSv1; id={policy_id(parse_policy(NEW))}")  # stale
    process.start(dns_server.nameserver)
    yield process  # type: ignore[misc]
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


def client(ca: trustme.CA) -> httpx.AsyncClient:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return httpx.AsyncClient(verify=context, timeout=5.0)


@pytest.mark.slow
async def test_sighup_swaps_the_policy_under_load_without_a_failed_request(
    host: HostProcess, trust_ca: trustme.CA
) -> None:
    url = f"https://127.0.0.1:{host.port}/.well-known/mta-sts.txt"
    kw = {"headers": {"Host": "mta-sts.a.test"}, "extensions": {"sni_hostname": "mta-sts.a.test"}}
    answers: list[tuple[float, float, int, bytes]] = []
    errors: list[BaseException] = []
    done = asyncio.Event()

    async def kept_alive() -> None:  # one connection for all its requests
        async with client(trust_ca) as http:
            while not done.is_set():
                try:
                    started = time.monotonic()
                    r = await http.get(url, **kw)  # type: ignore[arg-type]
                    answers.append((started, time.monotonic(), r.status_code, r.content))
                except httpx.HTTPError as exc:
                    errors.append(exc)

    async def new_connections() -> None:  # a handshake per request
        while not done.is_set():
            try:
                started = time.monotonic()
                async with client(trust_ca) as http:
                    r = await http.get(url, **kw)  # type: ignore[arg-type]
                answers.append((started, time.monotonic(), r.status_code, r.content))
            except httpx.HTTPError as exc:
                errors.append(exc)

    workers = [asyncio.create_task(w()) for w in (kept_alive, kept_alive, new_connections) * 2]
    await asyncio.sleep(1.0)
    reloads = host.log.count("event=policies-loaded")
    host.policy("a.test", NEW)
    assert host.proc is not None
    signalled = time.monotonic()
    host.proc.send_signal(signal.SIGHUP)
    for _ in range(200):  # the process says when the new file is in
        if host.log.count("event=policies-loaded") > reloads:
            break
        await asyncio.sleep(0.05)
    loaded = time.monotonic()
    await asyncio.sleep(1.0)
    done.set()
    await asyncio.gather(*workers)
    assert errors == []
    assert {status for _, _, status, _ in answers} == {200}
    before = [body for _, end, _, body in answers if end < signalled]
    after = [body for start, _, _, body in answers if start > loaded]
    assert set(before) == {OLD} and set(after) == {NEW}
    assert len(before) > 5 and len(after) > 5, (len(before), len(after))
    assert host.stop() == 0


@pytest.mark.slow
async def test_the_metrics_endpoint_carries_each_served_domains_status(
    host: HostProcess,
) -> None:
    url = f"http://127.0.0.1:{host.metrics_port}/metrics"
    await asyncio.to_thread(wait_port, host.metrics_port)
    text = ""
    async with httpx.AsyncClient() as http:
        for _ in range(50):
            text = (await http.get(url)).text
            if 'hosted_domain_status{domain="b.test"}' in text:
                break
            await asyncio.sleep(0.1)
    p = "mta_sts_policyd_hosted_domain_"
    assert f'{p}served{{domain="a.test"}} 1.0' in text
    assert f'{p}delegation_verified{{domain="a.test"}} 1.0' in text
    assert f'{p}txt_id_current{{domain="a.test"}} 1.0' in text
    assert f'{p}txt_id_current{{domain="b.test"}} 0.0' in text
    assert f'{p}status{{domain="a.test"}} 0.0' in text
    assert f'{p}findings{{domain="b.test",severity="critical"}} 1.0' in text
    assert f'{p}status{{domain="b.test"}} 2.0' in text  # ID_NOT_BUMPED
    days = next(line for line in text.splitlines() if line.startswith(f"{p}certificate_days_left"))
    assert float(days.split()[-1]) > 80  # trustme's certificates last for centuries
    assert "mta_sts_policyd_lookups_total" not in text  # the daemon's series are not here
    assert host.stop() == 0


@pytest.mark.parametrize("taken", ["listen", "metrics"])
def test_a_port_in_use_exits_75_and_leaves_nothing_unawaited(
    tmp_path: Path, dns_server: DnsServer, taken: str
) -> None:
    """The serving port or the metrics port held by another process: exit 75 naming it, and
    no `coroutine ... was never awaited` after the error (nothing made before the bind)."""
    process = HostProcess(tmp_path)
    process.policy("a.test", OLD)
    config = process.config(dns_server.nameserver)
    port = process.port if taken == "listen" else process.metrics_port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        run = subprocess.run(
            [*COMMAND, "host", "-c", str(config)],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert run.returncode == 75, run.stderr
    assert "address already in use" in run.stderr.lower(), run.stderr
    assert f"127.0.0.1', {port})" in run.stderr or f"127.0.0.1:{port}:" in run.stderr
    assert "never awaited" not in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_sighup_says_which_changed_keys_wait_for_a_restart(host: HostProcess) -> None:
    config = host.root / "config.toml"
    config.write_text(config.read_text().replace('"127.0.0.1"]', '"127.0.0.2"]'))
    assert host.proc is not None
    host.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if "event=reload-needs-restart" in host.log:
            break
        time.sleep(0.05)
    assert "event=reload-needs-restart keys=host.expect_addresses " in host.log, host.log
    assert host.stop() == 0


def test_the_host_says_when_it_is_ready_and_when_it_stopped(host: HostProcess) -> None:
    for _ in range(100):
        if "event=ready" in host.log:
            break
        time.sleep(0.05)
    assert "event=ready domains=2 " in host.log
    assert host.stop() == 0
    assert "event=stopping signal=SIGTERM" in host.log and "event=stopped" in host.log
