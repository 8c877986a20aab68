"""The world of the Postfix end-to-end test (issue 6), run inside private namespaces.

    unshare --net --mount --propagation private python -m support.e2e_postfix_world WORKDIR

Inside a fresh network namespace only loopback exists, so this world can own 127.0.0.1:53 (the
system resolver Postfix uses is pointed there by a private bind mount of /etc/resolv.conf) and
port 25 on 127.0.0.2-4, one address per MX host. Separate addresses are needed because Postfix
refuses an MX whose address is its own `inet_interfaces` (127.0.0.1): "mail loops back to
myself". Nothing leaves the namespace; it disappears with the last process in it.

The daemon under test runs as a subprocess (support.daemon_process) with TLS-RPT, the maillog
follower and the shadow probe on; Debian's Postfix runs as a private instance
(support.postfix_instance) whose `smtp_tls_policy_maps` is the daemon's socketmap. Postfix
resolves MX records through our DNS server like in production (`smtp_host_lookup = dns`).
The result file holds the day's reports (`report show --json`) and the evidence (both logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .daemon_process import DaemonProcess
from .dns_server import DnsServer
from .https_server import HttpsServer
from .postfix_instance import PostfixInstance, _Collect, expired_cert

SENDER = "sender@sender.example.test"
RESULT_NAME = "result.json"
PROBE_EHLO = "probe.sender.example.test"
PROBE_DELAY = 1.5
"""Receivers answer the daemon's probe (known by its EHLO name) this late, at each EHLO: the
probe round of testing.test ends seconds after Postfix's sessions are in the log, so those
sessions must wait for the round's verdict (issue 6 §3) instead of racing it."""


@dataclass(frozen=True)
class Domain:
    """One recipient domain, its MTA-STS policy and its single MX host."""

    name: str
    mode: str  # the policy's mode
    address: str  # the MX host's address (port 25)
    cert: str  # valid | wrong-name | expired
    messages: int  # messages sent, one SMTP session each
    status: str  # the Postfix delivery status expected: sent | deferred

    @property
    def mx(self) -> str:
        return f"mx.{self.name}"

    @property
    def policy(self) -> str:
        return f"version: STSv1\nmode: {self.mode}\nmx: {self.mx}\nmax_age: 86400\n"


DOMAINS = (
    Domain("enforce.test", "enforce", "127.0.0.2", "valid", 2, "sent"),
    Domain("testing.test", "testing", "127.0.0.3", "wrong-name", 2, "sent"),
    Domain("expired.test", "enforce", "127.0.0.4", "expired", 1, "deferred"),
)


# --- namespace, DNS, receivers -------------------------------------------------------------


def setup_namespace(workdir: Path) -> None:
    """Loopback up; the system resolver (Postfix's) asks 127.0.0.1:53 only."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = workdir / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
    subprocess.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], check=True)


class Port53Dns(DnsServer):
    """The loopback test DNS server on port 53 (the libc resolver cannot use another port)."""

    def start(self) -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((self.host, 53))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((self.host, 53))
        tcp.listen(128)
        self._udp, self._tcp = udp, tcp
        self._thread = threading.Thread(target=self._serve, name="e2e-dns", daemon=True)
        self._thread.start()


def publish(dns: DnsServer, https: HttpsServer) -> None:
    """MTA-STS TXT + policy host + MX + MX address for every domain."""
    for d in DOMAINS:
        dns.set_txt(f"_mta-sts.{d.name}", "v=STSv1; id=e2e1")
        dns.set_a(f"mta-sts.{d.name}", "127.0.0.1")
        dns.set_mx(d.name, (10, d.mx))
        dns.set_a(d.mx, d.address)
        https.set_policy(d.name, d.policy)


class _SlowForProbe(_Collect):
    """Keeps every message; delays the EHLO reply to the daemon's probe (PROBE_DELAY)."""

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if hostname == PROBE_EHLO:
            await asyncio.sleep(PROBE_DELAY)
        return responses


class _StartTlsController(Controller):
    """aiosmtpd on ADDRESS:25 offering STARTTLS with one certificate."""

    def __init__(self, handler: _Collect, address: str, tls: ssl.SSLContext, name: str) -> None:
        super().__init__(handler, hostname=address, port=25)
        self._tls = tls
        self._name = name

    def factory(self) -> SMTP:
        return SMTP(self.handler, tls_context=self._tls, hostname=self._name)


def leaf(ca: trustme.CA, d: Domain) -> trustme.LeafCert:
    if d.cert == "valid":
        return ca.issue_cert(d.mx)
    if d.cert == "wrong-name":
        return ca.issue_cert("other.example.test")
    return expired_cert(ca, d.mx)


def start_receiver(ca: trustme.CA, d: Domain, handler: _Collect) -> _StartTlsController:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf(ca, d).configure_cert(context)
    controller = _StartTlsController(handler, d.address, context, d.mx)
    controller.start()
    return controller


# --- daemon and Postfix ----------------------------------------------------------------------


def daemon_settings(maillog: Path) -> dict[str, dict[str, Any]]:
    return {
        "server": {"sts_attributes": "auto"},  # Postfix 3.7: plain replies
        "cache": {"cold_wait": 5.0},
        "tlsrpt": {
            "enabled": True,
            "socket": "",  # no libtlsrpt in Postfix 3.7: the log is the source
            "organization_name": "E2E Sender",
            "contact_info": "tlsrpt@sender.example.test",
            "envelope_sender": "tlsrpt@sender.example.test",
            "allow_unsigned": True,
        },
        "maillog": {"enabled": True, "path": str(maillog), "timezone": "UTC"},
        "probe": {"enabled": True, "timeout": 5.0, "port": 25, "ehlo_name": PROBE_EHLO},
    }


def postfix_instance(root: Path, ca_file: Path, socketmap: str) -> PostfixInstance:
    overrides = {
        "smtp_dns_support_level": "enabled",
        "smtp_host_lookup": "dns",
        "smtp_tls_policy_maps": f"socketmap:inet:{socketmap}:postfix",
        "smtp_tls_loglevel": "1",
        # One SMTP session per message, so session counts are exact.
        "smtp_connection_cache_on_demand": "no",
    }
    return PostfixInstance(root, overrides, ca_file=ca_file)


def deliver(pf: PostfixInstance) -> dict[str, list[str]]:
    """Submit each domain's messages one at a time; return each domain's status lines."""
    statuses: dict[str, list[str]] = {}
    for d in DOMAINS:
        for i in range(d.messages):
            since = len(pf.log_lines())
            rcpt = f"user{i}@{d.name}"
            pf.submit(SENDER, rcpt, subject=f"e2e {d.name} {i}")
            lines = pf.wait_for_log(rf"to=<{rcpt}>.*status=", since=since, timeout=30)
            statuses.setdefault(d.name, []).extend(lines)
    return statuses


def report_days(daemon: DaemonProcess, days: list[dt.date]) -> list[Any]:
    """`report show --day D --json` for each day the run touched (a run may cross midnight)."""
    reports: list[Any] = []
    for day in days:
        done = daemon.cli(
            "report", "show", "-c", str(daemon.config_path), "--day", str(day), "--json"
        )
        if done.returncode not in (0, 1) or (done.returncode == 0 and not done.stdout):
            raise RuntimeError(f"report show failed ({done.returncode}): {done.stderr}")
        reports.extend(json.loads(done.stdout) if done.stdout.strip() else [])
    return reports


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


# --- the run -------------------------------------------------------------------------------


def run(workdir: Path) -> dict[str, Any]:
    """Build the world under `workdir`, deliver, stop the daemon, read the day's reports."""
    setup_namespace(workdir)
    os.environ["TZ"] = "UTC"  # Postfix imports TZ: log timestamps in UTC (maillog.timezone)
    ca = trustme.CA()
    ca_file = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        dns = stack.enter_context(Port53Dns())
        https = stack.enter_context(HttpsServer(ca))
        publish(dns, https)
        handlers = {d.name: _SlowForProbe() for d in DOMAINS}
        for d in DOMAINS:
            stack.callback(start_receiver(ca, d, handlers[d.name]).stop)
        daemon = stack.enter_context(DaemonProcess.for_servers(dns, https))
        pf = postfix_instance(workdir / "postfix", ca_file, daemon.address)
        daemon.write_config(**daemon_settings(pf.maillog))
        stack.callback(lambda: result.update(postfix_log=pf.log_text()))
        stack.callback(pf.stop)
        pf.start()
        daemon.start()
        first_day = today()
        try:
            result["statuses"] = deliver(pf)
        finally:
            result["daemon_exit"] = daemon.stop()  # SIGTERM: the store is flushed
            result["daemon_log"] = daemon.log(since_start=False)
        days = sorted({first_day, today()})
        result["days"] = [str(d) for d in days]
        result["reports"] = report_days(daemon, days)
        result["received"] = {name: len(h.messages) for name, h in handlers.items()}
    return result


def main() -> None:
    """argv: WORKDIR; writes WORKDIR/result.json (with `error` on failure)."""
    workdir = Path(sys.argv[1])
    started = time.monotonic()
    result: dict[str, Any] = {}
    try:
        result = run(workdir)
    except BaseException:
        result["error"] = traceback.format_exc()
        raise
    finally:
        result["seconds"] = round(time.monotonic() - started, 1)
        (workdir / RESULT_NAME).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
