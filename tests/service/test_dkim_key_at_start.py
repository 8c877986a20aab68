"""Issue 11 item 15: the DKIM key is read and tried at start (`serve`) and by `check-config`.

A missing, unreadable or invalid key used to pass both and fail only when reports went out after
midnight. Real daemon processes and the real CLI; the key is a real RSA key (the receivers'
`make_dkim_key`) or a broken file.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import StsWorld
from support.daemon_process import DaemonProcess
from support.tlsrpt_receivers import make_dkim_key

pytestmark = pytest.mark.fault

CREDENTIAL = "/run/credentials/mta-sts-policyd.service/dkim.key"


def tlsrpt(key_file: str) -> dict[str, object]:
    return {
        "enabled": True,
        "socket": "",
        "organization_name": "Example Sender",
        "contact_info": "tlsrpt@sender.example",
        "envelope_sender": "tlsrpt@sender.example",
        "dkim": {"domain": "sender.example", "selector": "tlsrpt", "key_file": key_file},
    }


@pytest.fixture
def daemon(sts_world: StsWorld) -> Iterator[DaemonProcess]:
    with DaemonProcess.for_servers(sts_world.dns, sts_world.https) as process:
        yield process


def configure(daemon: DaemonProcess, key_file: str) -> None:
    cfg = tlsrpt(key_file)
    dkim = cfg.pop("dkim")
    daemon.write_config(tlsrpt=cfg, **{"tlsrpt.dkim": dkim})  # type: ignore[arg-type]


def serve_exit(daemon: DaemonProcess) -> tuple[int, str]:
    daemon.start(wait=False)
    assert daemon.proc is not None
    try:
        code = daemon.proc.wait(30)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.proc.wait(5)
        pytest.fail(f"serve started with a broken DKIM key:\n{daemon.log()}")
    return code, daemon.log()


def check_config(daemon: DaemonProcess) -> subprocess.CompletedProcess[str]:
    return daemon.cli("check-config", "-c", str(daemon.config_path))


def broken_keys(tmp: Path) -> list[tuple[str, str]]:
    garbage = tmp / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    unreadable = tmp / "unreadable.key"
    unreadable.write_bytes(make_dkim_key().pem)
    unreadable.chmod(0)
    directory = tmp / "a-directory"
    directory.mkdir()
    cases = [
        (str(tmp / "missing.key"), "No such file"),
        (str(garbage), "not a usable DKIM private key"),
        (str(directory), "Is a directory"),
    ]
    if os.geteuid() != 0:  # root reads mode 0 files
        cases.append((str(unreadable), "Permission denied"))
    return cases


def test_serve_and_check_config_refuse_a_broken_key_naming_it(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    for n, (key_file, why) in enumerate(broken_keys(tmp_path)):
        configure(daemon, key_file)
        checked = check_config(daemon)
        assert checked.returncode == 78, checked.stdout + checked.stderr
        assert key_file in checked.stderr and why in checked.stderr
        if n >= 2:
            continue  # serve runs the same check: two cases show it (each start costs seconds)
        code, log = serve_exit(daemon)
        assert code == 78, log
        assert "tlsrpt.dkim.key_file" in log and key_file in log and why in log


def test_a_good_key_starts_and_checks(daemon: DaemonProcess, tmp_path: Path) -> None:
    key = tmp_path / "dkim.key"
    key.write_bytes(make_dkim_key().pem)
    configure(daemon, str(key))
    checked = check_config(daemon)
    assert checked.returncode == 0, checked.stderr
    daemon.start()
    assert daemon.stop() == 0


def test_a_credential_path_is_explained_outside_the_service(daemon: DaemonProcess) -> None:
    configure(daemon, CREDENTIAL)
    if os.path.exists(CREDENTIAL):
        pytest.skip("this machine has that credential")
    checked = check_config(daemon)
    # check-config outside the service cannot see the credential: it says so, and what serve does
    assert checked.returncode == 0, checked.stderr
    assert CREDENTIAL in checked.stderr and "only inside the service" in checked.stderr
    # serve outside the service (no $CREDENTIALS_DIRECTORY) has no key: a config error saying why
    code, log = serve_exit(daemon)
    assert code == 78 and CREDENTIAL in log and "only inside the service" in log


def test_inside_the_service_a_missing_credential_is_an_error(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    configure(daemon, str(creds / "dkim.key"))
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    checked = daemon.cli("check-config", "-c", str(daemon.config_path), env=env)
    assert checked.returncode == 78 and "No such file" in checked.stderr
    (creds / "dkim.key").write_bytes(make_dkim_key().pem)
    checked = daemon.cli("check-config", "-c", str(daemon.config_path), env=env)
    assert checked.returncode == 0, checked.stderr
