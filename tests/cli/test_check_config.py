"""`check-config` reports every problem it can find in one run, each naming its key.

In-process through `main(argv)`, with real files in a scratch directory: a bad value in one key
must not hide what the checks after loading (files, this machine, names) find for another.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mta_sts_policyd.cli import main as cli
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.config.settings import without_refused

TLSRPT_SIGNED = """
[tlsrpt]
enabled = true
organization_name = "Example"
contact_info = "tlsrpt@example.test"
envelope_sender = "noreply@example.test"
socket = ""
[tlsrpt.dkim]
domain = "example.test"
selector = "s"
key_file = "{missing}/absent.pem"
"""


def _keys(capsys: pytest.CaptureFixture[str], path: Path) -> list[str]:
    """check-config's exit code checked, then the key each error line names, in order."""
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.CONFIG
    lines = capsys.readouterr().err.splitlines()
    return [line.removeprefix(f"configuration error: {path}: ").split(":")[0] for line in lines]


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "c.toml"
    path.write_text(f'[cache]\nstate_dir = "{tmp_path}/state"\n' + text)
    return path


def test_a_bad_logging_level_does_not_hide_a_missing_ca_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _write(
        tmp_path, f'[logging]\nlevel = "LOUD"\n[discovery]\nca_file = "{tmp_path}/no.pem"\n'
    )
    assert _keys(capsys, path) == ["logging.level", "discovery.ca_file"]


@pytest.mark.parametrize(
    ("bad_value", "refused", "hidden"),
    [  # a refused key in a table, and what a check after loading found beside it
        ("[tlsrpt]\nretention_days = 0\n", "tlsrpt.retention_days", "tlsrpt.dkim.key_file"),
        ('[tlsrpt]\nsmtp_relay = "a b"\n', "tlsrpt.smtp_relay", "tlsrpt.dkim.key_file"),
        ("[reports_in]\nmin_days = 0\ndomains = ['a..b']\n", "reports_in.min_days",
         "reports_in.domains[0]"),
        ("[host]\npoll_interval = 0\nreports_path = 'x'\n", "host.poll_interval",
         "host.reports_path"),
        ("[fleet]\nredis = 'redis://127.0.0.1:1/0'\nheartbeat_interval = 0\n"
         "ca_file = '{missing}/ca.pem'\n", "fleet.heartbeat_interval", "fleet.ca_file"),
        ("[tlsrpt]\nsocket_mode = 'rw'\n[discovery]\nca_file = '{missing}/no.pem'\n",
         "tlsrpt.socket_mode", "discovery.ca_file"),
    ],
)  # fmt: skip
def test_a_refused_key_does_not_hide_the_later_checks_of_its_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, bad_value: str, refused: str, hidden: str
) -> None:
    """Before, any refused key of a table skipped the checks after loading that read that
    table: a bad tlsrpt.retention_days hid an unreadable DKIM key, and so on."""
    text = bad_value.format(missing=tmp_path)
    if hidden.startswith("tlsrpt."):  # the bad key goes into the one [tlsrpt] table
        text = TLSRPT_SIGNED.format(missing=tmp_path).replace("[tlsrpt]\n", text, 1)
    keys = _keys(capsys, _write(tmp_path, text))
    assert refused in keys and hidden in keys
    assert len(keys) == len(set(keys))  # each problem once


def test_the_fleet_check_lists_an_unreadable_password_and_a_missing_ca_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _write(
        tmp_path,
        f"[fleet]\nredis = 'redis://127.0.0.1:1/0'\npassword_file = '{tmp_path}/pw'\n"
        f"ca_file = '{tmp_path}/ca.pem'\n",
    )
    keys = _keys(capsys, path)
    assert keys[:2] == ["fleet.password_file", "fleet.ca_file"]
    (tmp_path / "pw").write_bytes(b"\xff\xfe")  # not UTF-8: one line, not a traceback
    (tmp_path / "pw").chmod(0o600)  # no warning about its mode first
    assert _keys(capsys, path)[:2] == ["fleet.password_file", "fleet.ca_file"]


@pytest.mark.parametrize(
    "listener", ['[host]\nmetrics_listen = "0.0.0.0:9465"', '[metrics]\nlisten = "0.0.0.0:9464"']
)
def test_a_refused_allow_remote_is_the_one_problem_of_a_remote_metrics_listener(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, listener: str
) -> None:
    """`metrics.allow_remote = "yes"` is refused; the listener is not judged again against
    the default (false) it was left at, which would read as though no opt-in was written.
    With the opt-in written false, the listener is refused, naming it."""
    remote = listener.replace("[metrics]\n", "")
    path = _write(tmp_path, f'[metrics]\nallow_remote = "yes"\n{remote}\n')
    assert _keys(capsys, path) == ["metrics.allow_remote"]
    path = _write(tmp_path, f"[metrics]\nallow_remote = false\n{remote}\n")
    key = "host.metrics_listen" if "[host]" in listener else "metrics.listen"
    assert _keys(capsys, path) == [key]
    path = _write(tmp_path, f"[metrics]\nallow_remote = true\n{remote}\n")
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.OK
    capsys.readouterr()


def test_what_a_check_says_of_a_refused_key_is_left_out() -> None:
    """Said once, by the loader: not again by a check that saw the key's default."""
    refused = ["tlsrpt.dkim: expected a table [tlsrpt.dkim]", "tlsrpt.enabled: expected true"]
    problems = [
        "tlsrpt.dkim.key_file: cannot read /x",  # a part of a refused table
        "maillog.enabled: needs tlsrpt.enabled = true",  # brings the refused key in
        "tlsrpt.enabled_x: other",  # another key that starts alike
        "discovery.ca_file: no such file",
    ]
    assert without_refused(problems, refused) == problems[2:]
    assert without_refused(problems, []) == problems


def test_an_ipv6_nameserver_with_a_port_like_last_group_is_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`::1:5353` is valid (the address ::1:5353, port 53) but seldom meant: exit 0, the
    effective configuration, and a warning naming the key and the bracketed form."""
    path = _write(tmp_path, '[discovery]\nnameservers = ["127.0.0.1:53", "::1:5353"]\n')
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.OK
    out, err = capsys.readouterr()
    assert 'nameservers = ["127.0.0.1:53", "::1:5353"]' in out
    assert err.startswith(f"warning: {path}: discovery.nameservers[1]: '::1:5353' is the address")
    assert "write [::1]:5353" in err and len(err.splitlines()) == 1
    assert cli.main(["check-config", "-c", str(path), "--json"]) == ExitCode.OK
    out, err = capsys.readouterr()
    assert json.loads(out)["discovery"]["nameservers"] == ["127.0.0.1:53", "::1:5353"]
    assert "discovery.nameservers[1]" in err
    path.write_text(path.read_text() + '[logging]\nlevel = "LOUD"\n')  # beside errors too
    assert _keys(capsys, path) == ["warning", "logging.level"]
