"""A throw-away Postfix instance and local SMTP receivers, for capture scripts and end-to-end tests.

Postfix runs from its own config directory (`postfix -c DIR start`) with queue, data and log under
one temp directory, listens on 127.0.0.1 only and logs through postlogd to `DIR/maillog`. No DNS:
`smtp_dns_support_level = disabled` + `smtp_host_lookup = native`; host names given in `hosts` are
resolved through a private /etc/hosts that is bind-mounted in a mount namespace of the Postfix
processes only (needs root and `unshare`; the system's /etc/hosts is never touched).

Receivers are aiosmtpd servers on 127.0.0.1 that offer STARTTLS with a given certificate (or not).
`python -m tests.support.postfix_instance` is not provided; see tests/fixtures/maillog/capture.py.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .ports import free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
LOOPBACK = "127.0.0.1"

# master.cf without chroot: only the services a relaying instance needs, plus postlogd for
# maillog_file.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


def postfix_available() -> bool:
    """True when a private instance can run here (Postfix installed, root, postfix user)."""
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return False
    return os.path.exists(POSTFIX) and os.geteuid() == 0


def can_unshare() -> bool:
    """True when a private mount namespace (for a private /etc/hosts) can be created."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


# --- receivers ---------------------------------------------------------------------------------


class _Collect:
    """aiosmtpd handler that keeps every accepted message."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 Ok: queued"


class _BadStartTls(SMTP):
    """Advertises STARTTLS but refuses it (`refuse`) or breaks the handshake (`broken`)."""

    mode = "refuse"

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.mode == "refuse":
            await self.push("454 4.7.0 TLS not available due to local problem")
            return
        await self.push("220 2.0.0 Ready to start TLS")
        if self.transport is not None:
            self.transport.write(b"this is not a TLS server hello\r\n")
            self.transport.close()


class _Controller(Controller):
    """Controller whose SMTP instances may offer STARTTLS."""

    def __init__(
        self, handler: Any, port: int, tls: ssl.SSLContext | None, name: str, starttls: str
    ) -> None:
        super().__init__(handler, hostname=LOOPBACK, port=port)
        self._tls = tls
        self._name = name
        self._starttls = starttls

    def factory(self) -> SMTP:
        if self._starttls == "ok":
            return SMTP(self.handler, tls_context=self._tls, hostname=self._name)
        server = _BadStartTls(self.handler, tls_context=self._tls, hostname=self._name)
        server.mode = self._starttls
        return server

    def _trigger_server(self) -> None:
        # The base class opens a plain connection and (when STARTTLS is offered) a TLS one;
        # a plain EHLO is enough to know the server is up.
        with smtplib.SMTP(LOOPBACK, self.port, timeout=5) as client:
            client.ehlo("ready.example.test")


@dataclass
class Receiver:
    """A local SMTP server; `cert` None means it does not offer STARTTLS.

    `starttls`: "ok", "refuse" (454 reply) or "broken" (220, then no TLS handshake).
    """

    name: str
    cert: trustme.LeafCert | None = None
    starttls: str = "ok"
    port: int = field(default_factory=free_port)
    handler: _Collect = field(default_factory=_Collect)
    _controller: _Controller | None = None

    def start(self) -> Receiver:
        context = None
        if self.cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.cert.configure_cert(context)
        self._controller = _Controller(self.handler, self.port, context, self.name, self.starttls)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Envelope]:
        return self.handler.messages


def self_signed_cert(name: str) -> trustme.LeafCert:
    """A leaf certificate for `name` that is its own issuer (OpenSSL: self-signed certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return trustme.LeafCert(key_pem, cert.public_bytes(serialization.Encoding.PEM), [])


def expired_cert(ca: trustme.CA, name: str) -> trustme.LeafCert:
    """A certificate for `name` from `ca` that expired yesterday."""
    now = dt.datetime.now(dt.UTC)
    return ca.issue_cert(
        name, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
    )


# --- the Postfix instance ----------------------------------------------------------------------


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a Postfix command; on failure raise with its stderr (Postfix explains itself there)."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _base_main_cf(root: Path, ca_file: Path | None) -> dict[str, str]:
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(root / "queue"),
        "data_directory": str(root / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "sender.example.test",
        "mydomain": "example.test",
        "myorigin": "$myhostname",
        "mydestination": "",
        "local_transport": "error:local delivery is disabled",
        "alias_maps": "",
        "alias_database": "",
        "inet_interfaces": LOOPBACK,
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject",
        "maillog_file": str(root / "maillog"),
        "maillog_file_prefixes": str(root),
        "smtp_dns_support_level": "disabled",
        "smtp_host_lookup": "native",
        "smtp_tls_security_level": "may",
        "smtp_tls_loglevel": "1",
        "smtp_tls_session_cache_database": "",
        "smtp_connect_timeout": "5s",
        "queue_run_delay": "300s",
        "minimal_backoff_time": "300s",
        "maximal_backoff_time": "600s",
        "delay_warning_time": "0",
        "biff": "no",
        "append_dot_mydomain": "no",
    }
    if ca_file is not None:
        settings["smtp_tls_CAfile"] = str(ca_file)
    return settings


class PostfixInstance:
    """One private Postfix instance under `root` (created if missing).

    Every directory above `root` must be searchable by the postfix user (pytest's `tmp_path`
    is not: its base is mode 0700; use `tempfile.mkdtemp()`, which is made 0755 here).
    """

    def __init__(
        self,
        root: Path,
        overrides: Mapping[str, str] | None = None,
        *,
        hosts: Mapping[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.smtpd_port = free_port()
        self.hosts = dict(hosts or {})
        self.settings = _base_main_cf(root, ca_file)
        self.settings.update(overrides or {})
        self.master_extra = ""
        """Further master.cf lines (e.g. a pipe transport under test)."""
        self.namespace_setup = ""
        """Shell commands run in Postfix's private mount namespace before it starts."""
        self.running = False

    @property
    def maillog(self) -> Path:
        return Path(self.settings["maillog_file"])

    def write_table(self, name: str, entries: Mapping[str, str]) -> str:
        """Write a texthash: table under the config dir; return the table's name for main.cf."""
        path = self.config_dir / name
        self.config_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{key} {value}\n" for key, value in entries.items()))
        return f"texthash:{path}"

    def configure(self, overrides: Mapping[str, str] | None = None) -> None:
        """(Re)write main.cf and master.cf; reload when running."""
        self.settings.update(overrides or {})
        for sub in ("etc", "queue", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # Postfix daemons run as mail_owner: they must reach the tree and own data_directory.
        self.root.chmod(0o755)
        owner = pwd.getpwnam(self.settings["mail_owner"])
        os.chown(self.root / "data", owner.pw_uid, owner.pw_gid)
        main = "".join(f"{k} = {v}\n" for k, v in self.settings.items())
        (self.config_dir / "main.cf").write_text(main)
        listen = f"{LOOPBACK}:{self.smtpd_port}"
        master = MASTER_CF.format(listen=listen) + self.master_extra
        (self.config_dir / "master.cf").write_text(master)
        if self.hosts:
            lines = "".join(f"{addr} {name}\n" for name, addr in self.hosts.items())
            (self.root / "hosts").write_text("127.0.0.1 localhost\n" + lines)
        if self.running:
            self.postfix("reload")

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([POSTFIX, "-c", str(self.config_dir), *args])

    def start(self) -> PostfixInstance:
        self.configure()
        self.postfix("check")
        cmd = [POSTFIX, "-c", str(self.config_dir), "start"]
        if self.hosts or self.namespace_setup:
            hosts = 'mount --bind "$1" /etc/hosts && ' if self.hosts else ""
            script = f'{hosts}{self.namespace_setup or ":"} && exec "$2" -c "$3" start'
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
            cmd += [str(self.root / "hosts"), POSTFIX, str(self.config_dir)]
        try:
            _run(cmd)
        except RuntimeError as exc:  # the reason is in the log (e.g. a directory mode)
            tail = "\n".join(self.log_lines()[-5:])
            raise RuntimeError(f"{exc}\n{tail}") from None
        self.running = True
        self._wait_listening()
        return self

    def stop(self) -> None:
        if self.running:
            subprocess.run(
                [POSTFIX, "-c", str(self.config_dir), "stop"],
                capture_output=True,
                check=False,
                timeout=60,
            )
            self.running = False

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((LOOPBACK, self.smtpd_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("postfix smtpd did not start listening")

    def submit(self, sender: str, rcpt: str, subject: str = "test") -> None:
        """Hand one message to the instance over SMTP (its smtpd on 127.0.0.1)."""
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
        msg.set_content("capture\n")
        with smtplib.SMTP(LOOPBACK, self.smtpd_port, timeout=10) as client:
            client.send_message(msg, from_addr=sender, to_addrs=[rcpt])

    def sendmail(self, sender: str, rcpts: Iterable[str], body: str = "capture\n") -> None:
        """Hand one message to the instance through its sendmail(1) (postdrop + pickup)."""
        env = dict(os.environ, MAIL_CONFIG=str(self.config_dir))
        data = f"From: {sender}\nSubject: test\n\n{body}"
        cmd = ["sendmail", "-C", str(self.config_dir), "-f", sender, "-i", "--", *rcpts]
        subprocess.run(cmd, input=data, text=True, check=True, env=env, timeout=30)

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def wait_for_log(
        self, pattern: str, timeout: float = 20.0, count: int = 1, since: int = 0
    ) -> list[str]:
        """Wait until `count` log lines (from line index `since` on) match the regex."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.log_lines()[since:] if regex.search(ln)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line matching {pattern!r}:\n{self.log_text()}")
            time.sleep(0.1)
