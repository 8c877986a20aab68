"""The policy host's unit as shipped, under a real systemd (systemd-nspawn, as
test_systemd_boot.py does for the daemon), set up the way docs/host.md tells an operator:
the host starts as its own dynamic user with nothing to serve; root writes a policy with
`generate --write` into the default policy_dir and runs docs/host.md's certbot deploy hook
(taken from the document) on a root-only certbot-style folder; the hook's `systemctl reload`
makes the host serve the policy on port 443; a second `generate` and reload serve the new bytes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import trustme
from test_systemd_boot import SITE_IN_CONTAINER, SOURCE_IN_CONTAINER, command_venv, nspawn

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
TARGET = """\
[Unit]
Requires=basic.target smoke.service
After=basic.target
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


@pytest.mark.slow
def test_the_shipped_host_unit_serves_as_docs_host_md_sets_it_up(tmp_path: Path) -> None:
    binary = nspawn()
    if sys.version_info[:2] != (3, 11) or not Path("/usr/bin/python3.11").exists():
        pytest.skip("the bind-mounted packages need the system's python3.11")
    venv, links, out, units, certs = (
        tmp_path / n for n in ("venv", "bin", "out", "units", "certs")
    )
    command_venv(venv)
    for d in (links, out, units, certs):
        d.mkdir()
    (links / "mta-sts-policyd").symlink_to("/opt/mta-sts-policyd/bin/mta-sts-policyd")
    (units / "smoke.service").write_text(SMOKE)
    (units / "default.target").write_text(TARGET)
    certbot_folder(certs)
    (tmp_path / "hook.sh").write_text(deploy_hook())
    (tmp_path / "fetch.py").write_text(FETCH)
    (tmp_path / "config.toml").write_text(CONFIG)
    binds = [f"--bind-ro={venv}:/opt/mta-sts-policyd", f"--bind-ro={links}:/usr/local/bin",
             f"--bind-ro={sysconfig.get_paths()['purelib']}:{SITE_IN_CONTAINER}",
             f"--bind-ro={REPO_ROOT / 'daemon'}:{SOURCE_IN_CONTAINER}",
             f"--bind-ro={certs}:/srv/certs", f"--bind-ro={tmp_path / 'hook.sh'}:/srv/hook.sh",
             f"--bind-ro={tmp_path / 'fetch.py'}:/srv/fetch.py",
             f"--bind-ro={tmp_path / 'config.toml'}:/etc/mta-sts-policyd/config.toml",
             f"--bind-ro={REPO_ROOT / 'systemd' / UNIT}:/etc/systemd/system/{UNIT}",
             f"--bind={out}:/out"]  # fmt: skip
    for unit in units.iterdir():
        binds.append(f"--bind-ro={unit}:/etc/systemd/system/{unit.name}")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    done = subprocess.run(
        [binary, "-D", "/", "--volatile=yes", "--register=no", "--keep-unit", "-q", "-b",
         "--private-network", "--resolv-conf=off", f"--bind-ro={resolv}:/etc/resolv.conf",
         "--bind-ro=/dev/null:/etc/systemd/system/systemd-networkd-wait-online.service",
         "--console=pipe", *binds],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert (out / "active").exists(), done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "journal.json").read_text().splitlines()]
    journal = "\n".join(str(r.get("MESSAGE", "")) for r in records)
    assert (out / "active").read_text() == "active\n", journal
    assert "User=mta-sts-policyd-host" in (out / "show").read_text()
    assert (out / "hook.rc").read_text() == "0\n", (out / "hook.txt").read_text()
    first, second = body(out / "first.http"), body(out / "second.http")
    assert b"mode: testing" in first, (first, journal)
    assert b"mode: enforce" in second, (second, journal)
    assert "event=certificate-loaded name=mta-sts.a.test" in journal
    assert "event=certificate-refused" not in journal and "event=policy-file-refused" not in journal
