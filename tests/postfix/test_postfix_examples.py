"""postfix-examples/: real `postconf` accepts the snippets, the sample config is the defaults,
and the README's `postmap -q` transcripts are what postmap prints (issue 3 §7, issue 5 §7)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mta_sts_policyd.config.settings import Config, config_as_dict, load_config
from mta_sts_policyd.postfix.policy_reply import render_policy_reply
from mta_sts_policyd.postfix.server import SocketmapServer
from mta_sts_policyd.postfix.socketmap import REPLY_NOTFOUND
from mta_sts_policyd.sts.policy import parse_policy
from support import REPO_ROOT

EXAMPLES = REPO_ROOT / "postfix-examples"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
OLD, NEW = "3.9-and-older", "3.10-and-newer"
ONLY_3_10 = {"smtp_tlsrpt_enable", "smtp_tlsrpt_socket_name"}
REPORT_SENDER = "tlsrpt-noreply@example.com"
# Keeps postmap/postconf from spending seconds on host name lookups at start-up.
BASE_MAIN_CF = "myhostname = localhost.localdomain\nmydomain = localdomain\n"


def write_settled(path: Path, text: str) -> None:
    """Write a file dated 10 s back: Postfix re-reads a main.cf younger than a second for a
    while (in case it is still being edited), which costs 1.5 s per command."""
    path.write_text(text)
    past = time.time() - 10
    os.utime(path, (past, past))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def postfix_version() -> tuple[int, ...]:
    if not Path(POSTCONF).exists():
        pytest.fail("postconf not found: install Debian's postfix package")
    out = run(POSTCONF, "-d", "-h", "mail_version").stdout.strip()
    return tuple(int(x) for x in out.split(".")[:2])


def config_dir(tmp_path: Path, variant: str) -> Path:
    """A Postfix config directory holding only the example main.cf and master.cf."""
    directory = tmp_path / variant
    directory.mkdir()
    main = (EXAMPLES / f"main.cf-postfix-{variant}").read_text()
    write_settled(directory / "main.cf", BASE_MAIN_CF + main)
    write_settled(directory / "master.cf", (EXAMPLES / f"master.cf-postfix-{variant}").read_text())
    return directory


def postconf(directory: Path, *args: str) -> tuple[dict[str, str], list[str]]:
    """`postconf -c DIR ARGS` as name -> value, and the names postconf warns are unused."""
    result = run(POSTCONF, "-c", str(directory), *args)
    assert result.returncode == 0, result.stderr
    values = dict(line.split(" = ", 1) for line in result.stdout.splitlines() if " = " in line)
    values.update({line[:-2]: "" for line in result.stdout.splitlines() if line.endswith(" =")})
    unused = re.findall(r"unused parameter: ([\w.]+)=", result.stderr)
    other = [ln for ln in result.stderr.splitlines() if ln and "unused parameter" not in ln]
    assert other == [], other
    return values, unused


# --- config.toml ------------------------------------------------------------------------


def test_sample_config_is_exactly_the_defaults() -> None:
    assert load_config(EXAMPLES / "config.toml") == Config()


def flat_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def test_sample_config_sets_every_key() -> None:
    """Equal to the defaults is only meaningful if every key is really written out."""
    sample = tomllib.loads((EXAMPLES / "config.toml").read_text())
    assert flat_keys(sample) == flat_keys(config_as_dict(Config()))


# --- main.cf / master.cf through the real postconf --------------------------------------


def test_pre_3_10_snippets_have_no_unused_parameter(tmp_path: Path) -> None:
    directory = config_dir(tmp_path, OLD)
    main, unused_main = postconf(directory, "-n")
    services, unused_master = postconf(directory, "-P")
    assert unused_main == unused_master == []
    assert main["smtp_tls_policy_maps"] == "socketmap:inet:127.0.0.1:8463:postfix"
    assert main["smtp_tls_CAfile"] == "/etc/ssl/certs/ca-certificates.crt"  # PF-ca-file
    assert main["smtp_tls_security_level"] == "dane"  # RFC 8461 §2: DANE stays first
    assert main["smtp_dns_support_level"] == "dnssec"
    assert main["smtp_tls_loglevel"] == "1"  # PF-maillog-summary: lines for the log follower
    assert services["tlsrpt-out/unix/smtp_tls_security_level"] == "may"
    assert services["tlsrpt-out/unix/smtp_tls_policy_maps"] == ""
    assert services["tlsrpt-out/unix/syslog_name"] == "postfix/tlsrpt-out"


def test_3_10_snippets_warn_only_about_3_10_parameters(tmp_path: Path) -> None:
    directory = config_dir(tmp_path, NEW)
    main, unused_main = postconf(directory, "-n")
    services, unused_master = postconf(directory, "-P")
    if postfix_version() >= (3, 10):
        assert unused_main == unused_master == []
    else:
        # Postfix < 3.10 knows no smtp_tlsrpt_*; nothing else may be unknown to it.
        assert set(unused_main) == ONLY_3_10
        assert set(unused_master) == {"smtp_tlsrpt_enable"}
    # postconf < 3.10 does not print parameters it does not know; read those from the file.
    text = (EXAMPLES / f"main.cf-postfix-{NEW}").read_text()
    assert "\nsmtp_tlsrpt_enable = yes\n" in text
    assert f"\nsmtp_tlsrpt_socket_name = {Config().tlsrpt.socket}\n" in text
    assert main["smtp_tls_security_level"] == "dane"
    assert main["smtp_tls_CAfile"] == "/etc/ssl/certs/ca-certificates.crt"
    assert "  -o smtp_tlsrpt_enable=no\n" in (EXAMPLES / f"master.cf-postfix-{NEW}").read_text()
    assert services["tlsrpt-out/unix/smtp_tls_security_level"] == "may"
    assert services["tlsrpt-out/unix/smtp_tls_policy_maps"] == ""


@pytest.mark.parametrize("variant", [OLD, NEW])
def test_report_sender_is_routed_to_the_report_transport(tmp_path: Path, variant: str) -> None:
    directory = config_dir(tmp_path, variant)
    table = run(
        POSTCONF, "-c", str(directory), "-h", "sender_dependent_default_transport_maps"
    ).stdout.strip()
    routed = run(POSTMAP, "-c", str(directory), "-q", REPORT_SENDER, table)
    assert (routed.returncode, routed.stdout.strip()) == (0, "tlsrpt-out:"), routed.stderr
    other = run(POSTMAP, "-c", str(directory), "-q", "alice@example.com", table)
    assert (other.returncode, other.stdout) == (1, "")
    service = run(POSTCONF, "-c", str(directory), "-M", "tlsrpt-out/unix")
    assert service.stdout.split()[:8] == ["tlsrpt-out", "unix", "-", "-", "y", "-", "-", "smtp"]


@pytest.mark.parametrize("variant", [OLD, NEW])
def test_snippets_use_the_daemon_default_listener(variant: str) -> None:
    text = (EXAMPLES / f"main.cf-postfix-{variant}").read_text()
    listen = Config().server.listen[0]
    assert f"smtp_tls_policy_maps = socketmap:inet:{listen}:postfix\n" in text


# --- README transcripts against the real postmap ----------------------------------------


def readme() -> str:
    return (EXAMPLES / "README.md").read_text()


def readme_policy() -> bytes:
    blocks: list[str] = re.findall(r"```\n(.*?)```", readme(), re.DOTALL)
    block = next(b for b in blocks if "STSv1" in b)
    return block.replace("\n", "\r\n").encode()


def readme_transcripts() -> list[tuple[str, str, str, int]]:
    """(key, table, printed output, exit status) per ```console block."""
    out = []
    for block in re.findall(r"```console\n(.*?)```", readme(), re.DOTALL):
        found = re.fullmatch(r"\$ postmap -q (\S+) (\S+)\n(.*?)\$ echo \$\?\n(\d+)\n", block, re.S)
        assert found, block
        out.append((found[1], found[2], found[3], int(found[4])))
    return out


@pytest.fixture
async def daemon_port() -> AsyncIterator[int]:
    """A socketmap server answering like the daemon for the README's example domain."""
    policy = parse_policy(readme_policy())
    assert "MX records `mail.example.com` and `mx2.example.net`" in readme()
    enforce = render_policy_reply(
        policy,
        "example.com",
        sts_attributes=False,
        mx_hosts=["mail.example.com", "mx2.example.net"],
    )

    async def answer(name: str, key: str) -> bytes:
        return enforce if key == "example.com" else REPLY_NOTFOUND

    server = SocketmapServer(answer, idle_timeout=5.0)
    _, port = await server.listen_tcp("127.0.0.1", 0)
    yield port
    await server.close(drain_deadline=0.5)


async def test_readme_postmap_transcripts_match_real_postmap(
    daemon_port: int, tmp_path: Path
) -> None:
    write_settled(tmp_path / "main.cf", BASE_MAIN_CF)
    transcripts = readme_transcripts()
    assert {status for *_, status in transcripts} == {0, 1}
    for key, table, printed, status in transcripts:
        assert table == "socketmap:inet:127.0.0.1:8463:postfix"
        local = table.replace(":8463:", f":{daemon_port}:")
        proc = await asyncio.create_subprocess_exec(
            *(POSTMAP, "-c", str(tmp_path), "-q", key, local),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert (proc.returncode, stdout.decode()) == (status, printed), stderr
