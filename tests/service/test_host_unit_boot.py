"""The policy host's unit as shipped, under a real systemd (systemd-nspawn, as
test_systemd_boot.py does for the daemon), set up the way docs/host.md tells an operator:
the host starts as its own dynamic user with nothing to serve; root writes a policy with
`generate --write` into the default policy_dir and runs docs/host.md's certbot deploy hook
(taken from the document) on a root-only certbot-style folder; the hook's `systemctl reload`
makes the host serve the policy on port 443; a second `generate` and reload serve the new bytes.
With both units (the daemon's with its report-spool drop-in), a TLS report POSTed to the host
while the daemon is stopped is spooled, and the daemon, once started, takes it into its store.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import trustme
from test_systemd_boot import boot_container

from support import REPO_ROOT

UNIT = "mta-sts-policyd-host.service"
NAME = "mta-sts.a.test"
CONFIG = """\
[host]
listen = ["127.0.0.1:443"]
cert_dirs = ["/var/lib/mta-sts-policyd-host/certs"]
"""
FETCH = """\
import socket, ssl, sys
context = ssl.create_default_context(cafile="/srv/certs/ca.pem")
with socket.create_connection(("127.0.0.1", 443), timeout=5) as raw:
    with context.wrap_socket(raw, server_hostname="mta-sts.a.test") as tls:
        tls.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.1\\r\\nHost: mta-sts.a.test\\r\\n"
                    b"Connection: close\\r\\n\\r\\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
sys.stdout.buffer.write(data)
"""
GENERATE = "/usr/local/bin/mta-sts-policyd generate --domain a.test --mx mx.a.test --write"
SMOKE = f"""\
[Unit]
Wants={UNIT}
After={UNIT}

[Service]
Type=oneshot
ExecStart=/bin/sh -c '\\
  {GENERATE} /var/lib/mta-sts-policyd-host/policies --mode testing > /out/generate.txt 2>&1; \\
  RENEWED_LINEAGE=/srv/certs/live/{NAME} sh /srv/hook.sh > /out/hook.txt 2>&1; \\
  echo $? > /out/hook.rc; \\
  sleep 1; \\
  /usr/bin/python3 /srv/fetch.py > /out/first.http 2>&1; \\
  {GENERATE} /var/lib/mta-sts-policyd-host/policies --mode enforce --force >> /out/gen.txt 2>&1; \\
  systemctl reload {UNIT}; \\
  sleep 1; \\
  /usr/bin/python3 /srv/fetch.py > /out/second.http 2>&1; \\
  systemctl is-active {UNIT} > /out/active; \\
  systemctl show -p User {UNIT} > /out/show; \\
  journalctl -u {UNIT} -o json --no-pager > /out/journal.json; \\
  systemctl poweroff'
"""


def deploy_hook() -> str:
    """The certbot deploy hook as docs/host.md prints it."""
    text = (REPO_ROOT / "docs" / "host.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    hook = next(b for b in blocks if "renewal-hooks/deploy" in b)
    return "\n".join(line.removeprefix("   ") for line in hook.splitlines()) + "\n"


def certbot_folder(root: Path) -> None:
    """A CA and, like certbot's live/ folder, the name's chain and a root-only key."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    leaf = ca.issue_cert(NAME)
    live = root / "live" / NAME
    live.mkdir(parents=True, mode=0o700)
    (live / "fullchain.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (live / "privkey.pem").write_bytes(leaf.private_key_pem.bytes())
    (live / "privkey.pem").chmod(0o600)
    (root / "live").chmod(0o700)


def body(response: Path) -> bytes:
    data = response.read_bytes()
    assert data.startswith(b"HTTP/1.1 200 OK"), data[:500]
    return data.split(b"\r\n\r\n", 1)[1]


def boot(tmp_path: Path, smoke: str, files: dict[str, Path]) -> tuple[Path, str]:
    """Boot with the shipped host unit, `smoke` as the unit that drives the test, and `files`
    (container path -> host path) bound read-only; returns the /out folder and the host unit's
    journal messages."""
    shipped = REPO_ROOT / "systemd"  # the report spool's group and folder, as installed
    binds = [f"--bind-ro={shipped / UNIT}:/etc/systemd/system/{UNIT}"]
    for kind in ("sysusers", "tmpfiles"):
        source = shipped / f"mta-sts-policyd.{kind}"
        binds.append(f"--bind-ro={source}:/etc/{kind}.d/mta-sts-policyd.conf")
    binds += [f"--bind-ro={source}:{inside}" for inside, source in files.items()]
    out, records = boot_container(tmp_path, smoke, binds)
    return out, "\n".join(str(r.get("MESSAGE", "")) for r in records)


@pytest.mark.slow
def test_the_shipped_host_unit_serves_as_docs_host_md_sets_it_up(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    certbot_folder(certs)
    (tmp_path / "hook.sh").write_text(deploy_hook())
    (tmp_path / "fetch.py").write_text(FETCH)
    (tmp_path / "config.toml").write_text(CONFIG)
    files = {
        "/srv/certs": certs,
        "/srv/hook.sh": tmp_path / "hook.sh",
        "/srv/fetch.py": tmp_path / "fetch.py",
        "/etc/mta-sts-policyd/config.toml": tmp_path / "config.toml",
    }
    out, journal = boot(tmp_path, SMOKE, files)
    assert (out / "active").read_text() == "active\n", journal
    assert "User=mta-sts-policyd-host" in (out / "show").read_text()
    assert (out / "hook.rc").read_text() == "0\n", (out / "hook.txt").read_text()
    first, second = body(out / "first.http"), body(out / "second.http")
    assert b"mode: testing" in first, (first, journal)
    assert b"mode: enforce" in second, (second, journal)
    assert "event=certificate-loaded name=mta-sts.a.test" in journal
    assert "event=certificate-refused" not in journal and "event=policy-file-refused" not in journal


DNS = """\
import os, sys, time
sys.path.insert(0, "/srv/tests")
from support.dns_server import DnsServer
server = DnsServer()
server.start()
server.set_a("mta-sts.a.test", "127.0.0.1")
with open("/run/dns.port.new", "w") as out:
    out.write(str(server.address[1]))
os.rename("/run/dns.port.new", "/run/dns.port")
while True:
    time.sleep(3600)
"""
FETCH_ACME = """\
import socket, ssl, sys, time, urllib.request
anchor = ssl.create_default_context(cafile="/srv/acme/ca.pem")
root = urllib.request.urlopen("https://127.0.0.1:15000/roots/0", context=anchor).read()
context = ssl.create_default_context(cadata=root.decode())
for attempt in range(120):  # the host asks pebble at start; give it a minute
    try:
        with socket.create_connection(("127.0.0.1", 443), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="mta-sts.a.test") as tls:
                tls.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.1\\r\\nHost: mta-sts.a.test\\r\\n"
                            b"Connection: close\\r\\n\\r\\n")
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
        sys.stdout.buffer.write(data)
        break
    except (OSError, ssl.SSLError) as exc:
        print(attempt, exc, file=sys.stderr)
        time.sleep(0.5)
"""
RUN_ACME = f"""\
#!/bin/sh
trap 'systemctl poweroff' EXIT
/opt/mta-sts-policyd/bin/python3 /srv/acme/zone.py > /out/dns.log 2>&1 &
for i in $(seq 100); do [ -s /run/dns.port ] && break; sleep 0.1; done
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_VA_ALWAYS_VALID=0 \\
  /usr/bin/pebble -config /srv/acme/pebble.json -dnsserver 127.0.0.1:$(cat /run/dns.port) \\
  > /out/pebble.log 2>&1 &
{GENERATE} /var/lib/mta-sts-policyd-host/policies --mode testing > /out/generate.txt 2>&1
sleep 2
systemctl start {UNIT}
/usr/bin/python3 /srv/acme/fetch.py > /out/first.http 2> /out/fetch.err
ls -lR /var/lib/mta-sts-policyd-host/acme > /out/acme.ls 2>&1
systemctl is-active {UNIT} > /out/active
systemctl show -p User {UNIT} > /out/show
journalctl -u {UNIT} -o json --no-pager > /out/journal.json
"""
SMOKE_ACME = """\
[Unit]
After=basic.target

[Service]
Type=oneshot
TimeoutStartSec=180
ExecStart=/bin/sh /srv/acme/run.sh
"""
CONFIG_ACME = """\
[host]
listen = ["127.0.0.1:443"]
cert_dirs = []
acme_directory = "https://127.0.0.1:14000/dir"
acme_names = ["mta-sts.a.test"]
acme_ca_file = "/srv/acme/ca.pem"
"""


def pebble_folder(folder: Path) -> None:
    """pebble's configuration and its own HTTPS certificate, readable by the host's user."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "pebble.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "pebble.key"))
    config = {
        "pebble": {
            "listenAddress": "127.0.0.1:14000",
            "managementListenAddress": "127.0.0.1:15000",
            "certificate": "/srv/acme/pebble.pem",
            "privateKey": "/srv/acme/pebble.key",
            "httpPort": 5002,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (folder / "pebble.json").write_text(json.dumps(config))
    for name, text in (("zone.py", DNS), ("fetch.py", FETCH_ACME), ("run.sh", RUN_ACME)):
        (folder / name).write_text(text)
    for path in folder.iterdir():
        path.chmod(0o644)
    folder.chmod(0o755)


@pytest.mark.slow
def test_the_shipped_host_unit_gets_its_certificate_by_acme(tmp_path: Path) -> None:
    """Built-in ACME under the unit's sandbox, from its own state directory: pebble (real
    tls-alpn-01 validation on port 443) issues, the host serves with it."""
    acme = tmp_path / "acme"
    acme.mkdir()
    pebble_folder(acme)
    (tmp_path / "config.toml").write_text(CONFIG_ACME)
    files = {
        "/srv/acme": acme,
        "/srv/tests": REPO_ROOT / "tests",
        "/etc/mta-sts-policyd/config.toml": tmp_path / "config.toml",
    }
    out, journal = boot(tmp_path, SMOKE_ACME, files)
    pebble_log = (out / "pebble.log").read_text()
    assert (out / "active").read_text() == "active\n", journal + pebble_log
    assert "set VALID by completed challenge" in pebble_log, pebble_log[-3000:]
    first = body(out / "first.http")
    assert b"mode: testing" in first, (first, journal)
    assert "event=acme-issued name=mta-sts.a.test" in journal
    listing = (out / "acme.ls").read_text()
    assert "account.json" in listing and "privkey.pem" in listing, listing
    assert all(line.startswith("-rw-------") for line in listing.splitlines() if ".pem" in line)


POST = """\
import http.client, ssl, sys
context = ssl.create_default_context(cafile="/srv/certs/ca.pem")
connection = http.client.HTTPSConnection("127.0.0.1", 443, context=context, timeout=10)
connection.sock = context.wrap_socket(
    __import__("socket").create_connection(("127.0.0.1", 443), timeout=10),
    server_hostname="mta-sts.a.test")
body = open("/srv/report.json.gz", "rb").read()
connection.request("POST", "/tlsrpt", body, {"Host": "mta-sts.a.test",
                   "Content-Type": "application/tlsrpt+gzip"})
answer = connection.getresponse()
print(answer.status, answer.read().decode().strip())
"""
SPOOL = "/var/spool/mta-sts-policyd-reports"
RUN_REPORTS = f"""\
#!/bin/sh
trap 'systemctl poweroff' EXIT
systemctl start {UNIT}
{GENERATE} /var/lib/mta-sts-policyd-host/policies --mode testing > /out/generate.txt 2>&1
RENEWED_LINEAGE=/srv/certs/live/{NAME} sh /srv/hook.sh > /out/hook.txt 2>&1
sleep 1
/usr/bin/python3 /srv/post.py > /out/post.txt 2>&1
ls -ln {SPOOL}/new > /out/spooled.ls 2>&1
systemctl start mta-sts-policyd.service
for i in $(seq 60); do [ -z "$(ls -A {SPOOL}/new)" ] && break; sleep 0.5; done
ls -A {SPOOL}/new > /out/left.ls 2>&1
systemd-run --pipe --wait --collect -p DynamicUser=yes -p User=mta-sts-policyd \\
  -p StateDirectory=mta-sts-policyd /usr/local/bin/mta-sts-policyd reports-in summary --json \\
  > /out/summary.json 2> /out/summary.err
systemctl is-active mta-sts-policyd.service > /out/daemon.active
journalctl -u mta-sts-policyd.service -o cat --no-pager > /out/daemon.log
systemctl is-active {UNIT} > /out/active
journalctl -u {UNIT} -o json --no-pager > /out/journal.json
"""
SMOKE_REPORTS = """\
[Unit]
After=basic.target

[Service]
Type=oneshot
TimeoutStartSec=180
ExecStart=/bin/sh /srv/run.sh
"""
CONFIG_REPORTS = (
    CONFIG
    + """\
reports_path = "/tlsrpt"

[reports_in]
domains = ["a.test"]
spool_interval = 0.5
"""
)


@pytest.mark.slow
def test_both_shipped_units_take_a_report_posted_over_https(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from support.received_reports import report

    certs = tmp_path / "certs"
    certs.mkdir()
    certbot_folder(certs)
    doc = report("Sender Z", datetime.now(UTC).date() - timedelta(days=1), ok=11, failed=1)
    doc["policies"][0]["policy"]["policy-domain"] = "a.test"
    (tmp_path / "report.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    for name, text in (("hook.sh", deploy_hook()), ("post.py", POST), ("run.sh", RUN_REPORTS),
                       ("config.toml", CONFIG_REPORTS)):  # fmt: skip
        (tmp_path / name).write_text(text)
    systemd = REPO_ROOT / "systemd"
    dropin = "mta-sts-policyd.service.d/reports-spool.conf"
    files = {
        "/srv/certs": certs,
        "/srv/hook.sh": tmp_path / "hook.sh",
        "/srv/post.py": tmp_path / "post.py",
        "/srv/run.sh": tmp_path / "run.sh",
        "/srv/report.json.gz": tmp_path / "report.json.gz",
        "/etc/mta-sts-policyd/config.toml": tmp_path / "config.toml",
        "/etc/systemd/system/mta-sts-policyd.service": systemd / "mta-sts-policyd.service",
        f"/etc/systemd/system/{dropin}": systemd / dropin,
    }
    out, journal = boot(tmp_path, SMOKE_REPORTS, files)
    daemon_log = (out / "daemon.log").read_text()
    evidence = journal + daemon_log
    posted = (out / "post.txt").read_text()
    assert posted.startswith("201 "), posted + evidence
    assert "event=report-spooled" in journal
    spooled = (out / "spooled.ls").read_text()
    assert "-rw-r-----" in spooled, spooled  # group-readable, nobody else
    assert (out / "left.ls").read_text() == "", evidence
    assert (out / "daemon.active").read_text() == "active\n", evidence
    assert "event=report-spool-taken" in daemon_log and "taken=1" in daemon_log, daemon_log
    summary = (out / "summary.json").read_text()
    assert "Sender Z" in summary, summary + (out / "summary.err").read_text()
