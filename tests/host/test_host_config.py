"""`[host]` mistakes that used to pass silently: `check-config`, `host` and `host status` each
say what is wrong, naming the key, instead of serving nothing without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mta_sts_policyd.cli import main as cli
from mta_sts_policyd.cli.exit_codes import ExitCode


def write(tmp_path: Path, host: str) -> Path:
    path = tmp_path / "config.toml"
    certs = "" if "cert_dirs" in host else "cert_dirs = []\n"
    path.write_text(
        f'[cache]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[host]\nstate_dir = "{tmp_path / "host"}"\n{certs}{host}\n'
    )
    return path


def test_a_policy_folder_that_does_not_exist_is_a_warning_of_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-folder"
    path = write(tmp_path, f'policy_dir = "{missing}"')
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.OK
    err = capsys.readouterr().err
    assert f"warning: {path}: host.policy_dir: {missing} does not exist" in err
    missing.mkdir()
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.OK
    assert "host.policy_dir" not in capsys.readouterr().err


def test_the_default_folder_of_a_host_not_yet_started_here_is_no_news(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "")  # [host] state_dir written, not yet made: the host never ran
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.OK
    assert "host.policy_dir" not in capsys.readouterr().err


def test_host_status_says_the_policy_folder_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "x"
    path = write(tmp_path, f'policy_dir = "{missing}"')
    assert cli.main(["host", "status", "-c", str(path)]) == 3
    err = capsys.readouterr().err
    assert f"no policies in {missing}: the folder does not exist (host.policy_dir)" in err
    assert cli.main(["host", "status", "-c", str(path), "--json"]) == 3
    assert "does not exist" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ('acme_names = ["mta-sts.a.test"]',
         "host.acme_names: needs host.acme_directory (the ACME server that issues them)"),
        ('acme_directory = "https://ca.test/dir"\nacme_names = ["a.test"]',
         "host.acme_names[0]: expected mta-sts.DOMAIN (the only names the host serves policies"
         " for), got 'a.test'"),
        ('acme_directory = "http://ca.test/dir"\nacme_names = ["mta-sts.a.test"]',
         "host.acme_directory: expected an https:// URL (RFC 8555 §6.1: ACME runs over HTTPS"
         " only), got 'http://ca.test/dir'"),
        ('policy_dir = "policies"', "host.policy_dir: "),
        ('cert_dirs = ["/etc/letsencrypt/live", "certs"]',
         "host.cert_dirs[1]: expected an absolute directory path, got 'certs'"),
    ],
)  # fmt: skip
def test_host_settings_that_would_do_nothing_or_the_wrong_thing_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str, said: str
) -> None:
    path = write(tmp_path, host)
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert f"configuration error: {path}: {said}" in err, err
    assert len(err.splitlines()) == 1, err  # said once (not again by check_host)
    assert cli.main(["host", "status", "-c", str(path)]) == ExitCode.CONFIG  # host refuses too
    assert said in capsys.readouterr().err


def test_an_empty_http_listen_is_fine_without_http_01_and_refused_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policies").mkdir()
    plain = f'policy_dir = "{tmp_path / "policies"}"\nhttp_listen = []\n'
    assert cli.main(["check-config", "-c", str(write(tmp_path, plain))]) == ExitCode.OK
    capsys.readouterr()
    http_01 = 'acme_directory = "https://ca.test/dir"\nacme_challenge = "http-01"\n'
    assert cli.main(["check-config", "-c", str(write(tmp_path, plain + http_01))]) == 78
    assert "host.http_listen: expected at least one HOST:PORT" in capsys.readouterr().err
