"""Every command with bad input ends in one message and the documented exit code, never a
traceback (issue 12 item 3); `--json` errors are JSON; a closed pipe ends quietly.

In-process through `main(argv)`: an unexpected exception would propagate and fail the test.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from mta_sts_policyd.cli import main as cli
from mta_sts_policyd.cli.exit_codes import ExitCode
from support.daemon_process import COMMAND, subprocess_env
from support.ports import free_port

TLSRPT_ON = """
[tlsrpt]
enabled = true
organization_name = "Example"
contact_info = "tlsrpt@example.test"
envelope_sender = "noreply@example.test"
allow_unsigned = true
socket = ""
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()  # nothing listens there
    base = f'[server]\nlisten = ["127.0.0.1:{port}"]\n[cache]\nstate_dir = "{state}"\n'
    odd_domains = base + '[reports_in]\ndomains = ["a..b", "ok.example", "[192.0.2.1]"]\n'
    paths = {"plain": base, "tlsrpt": base + TLSRPT_ON, "bad": "[cache]\ncold_wait = -1\n"}
    paths["odd_domains"] = odd_domains
    paths["empty_host"] = base + f'[host]\npolicy_dir = "{tmp_path}/policies"\n'
    paths["own_table"] = base + '[own_domains]\ndomain = "x.example"\n'
    paths["reports_own"] = base + '[reports_in]\ndomains = ["x.example"]\n'
    paths["bad_host"] = base + (
        '[host]\nlisten = ["nonsense"]\nmetrics_listen = "0.0.0.0:9465"\n'
        'reports_path = "tlsrpt"\nacme_names = ["bad name"]\n'
    )
    paths["bad_local"] = (
        f'[server]\nlisten = ["unix:{tmp_path}/s.sock"]\nunix_group = "nosuchgroupxyz"\n'
        f'[cache]\nstate_dir = "{state}"\n[discovery]\nca_file = "{tmp_path}/none.pem"\n'
        f'[logging]\ntarget = "file"\nfile = "{tmp_path}/no/x.log"\n'
    )
    (tmp_path / "state-file").write_text("")
    paths["state_file"] = f'[cache]\nstate_dir = "{tmp_path}/state-file"\n'
    paths["relative"] = '[cache]\nstate_dir = "state"\n[tlsrpt]\nsocket = "x.sock"\n'
    paths["bad_listens"] = '[server]\nlisten = ["127.0.0.1:0", "unix:rel", "::1"]\n'
    paths["listed_twice"] = '[server]\nlisten = ["127.0.0.1:1", "127.0.0.1:1"]\n'
    paths["port_zero"] = (
        f'[server]\nlisten = ["127.0.0.1:0"]\n[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[host]\nstate_dir = "{tmp_path}/host"\nlisten = ["[::]:0"]\n'
        'http_listen = ["0.0.0.0:0"]\nmetrics_listen = "127.0.0.1:0"\n'
    )
    paths["own_host"] = base + '[[own_domains]]\ndomain = "[mx.example.test]"\n'
    out = {}
    for name, text in paths.items():
        (tmp_path / f"{name}.toml").write_text(text)
        out[name] = str(tmp_path / f"{name}.toml")
    out["missing"] = str(tmp_path / "absent.toml")
    (tmp_path / "a-file").write_text("not a directory\n")
    out["notdir"] = str(tmp_path / "a-file")  # a directory path under it cannot be made
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00binary")
    out["binary"] = str(tmp_path / "binary")
    out["port"] = str(port)
    out["dir"] = str(tmp_path)
    (tmp_path / "domains.txt").write_text("# own domains\nexample.test\nok.test a..b  # two\n")
    out["domains"] = str(tmp_path / "domains.txt")
    return out


U, N, T, C = ExitCode.USAGE, ExitCode.NOT_FOUND, ExitCode.TEMPFAIL, ExitCode.CONFIG
X = ExitCode.CANT_CREATE
CASES: list[tuple[str, int, str]] = [
    ("", U, "the following arguments are required"),
    ("frobnicate", U, "invalid choice"),
    ("query", U, "required: domain"),
    ("query -c {plain} example.test --timeout soon", U, "'soon' is not a number of seconds"),
    ("query -c {plain} ''", U, "'' is not a lookup key"),
    ("query -c {plain} x.example --timeout -1", U, "'-1' is not a number of seconds"),
    ("query -c {plain} x.example --timeout nan", U, "'nan' is not a number of seconds"),
    ("query -c {plain} x.example --timeout 1e400", U, "is not a number of seconds"),
    ("query -c {plain} x.example --socketmap bogus", U, "--socketmap: expected HOST:PORT"),
    ("query -c {plain} x.example --socketmap 127.0.0.1:99999", U, "port '99999': expected a"),
    ("check -c {plain} x.example --concurrency -3", U, "'-3' is not a whole number from 1"),
    ("check -c {plain} x.example --timeout nan", U, "is not a number of seconds"),
    ("monitor -c {plain} --interval 0", U, "'0' is not a number of seconds"),
    ("probe -c {plain} mx.example --port 70000", U, "'70000' is not a whole number"),
    ("probe -c {plain} mx.example --address nonsense", U, "'nonsense' is not an IP address"),
    ("probe -c {plain} 127.0.0.1 --port {port} --timeout 2", T, "connecting to 127.0.0.1 port"),
    ("probe -c {plain} [::1] --port {port} --timeout 2", T, "UNKNOWN ::1 [::1]:"),
    ("publish -c {plain} x.example --timeout -1", U, "is not a number of seconds"),
    ("reports-in summary -c {plain} --days 0", U, "'0' is not a whole number from 1"),
    ("reports-in summary -c {plain} --days 99999999999", U, "is not a whole number"),
    ("query -c {plain} 'two words'", U, "is not a lookup key"),
    ("query -c {plain} example.test", T, "cannot ask the daemon"),
    ("query -c {missing} example.test", C, "no such file"),
    ("query -c {bad} example.test", C, "cache.cold_wait"),
    ("resolve -c {plain} .example.test", N, "no lookup"),
    ("resolve -c {plain} [192.0.2.1]", N, "no lookup"),
    ("cache", U, "required"),
    ("cache list -c {plain}", T, "not reachable"),
    ("cache show -c {plain} example.test", T, "not reachable"),
    ("cache show -c {plain} [192.0.2.1]", N, "cannot have a policy"),  # as query and resolve
    ("cache refresh -c {plain} .example.test", N, "cannot have a policy"),
    ("cache purge -c {plain}", T, "not reachable"),
    ("check-config -c {missing}", C, "no such file"),
    ("check-config -c {odd_domains}", C, "reports_in.domains[2]: expected a domain name"),
    ("reports-in summary -c {odd_domains}", C, "reports_in.domains[0]: expected a domain name"),
    ("check-config -c {bad}", C, "cache.cold_wait: expected a number of seconds"),
    ("serve -c {missing}", C, "no such file"),
    ("serve -c {plain} --state-dir {notdir}", X, "it is a file, not a directory"),
    ("serve -c {plain} --state-dir relative", U, "--state-dir: expected an absolute directory"),
    ("check-config -c {relative}", C, "cache.state_dir: expected an absolute directory path"),
    ("serve --listen nowhere -c {plain}", U, "--listen: expected HOST:PORT"),
    ("report", U, "required"),
    ("report list -c {plain}", N, "TLS reporting is off"),
    ("report status -c {plain}", N, "TLS reporting is off"),
    ("report show -c {tlsrpt} --day yesterday", U, "expected YYYY-MM-DD"),
    ("report list -c {tlsrpt}", N, "no data yet"),
    ("report list -c {tlsrpt} --state-dir {notdir}", X, "it is a file, not a directory"),
    ("report show -c {tlsrpt} --day 2026-01-01", N, "no data yet"),
    ("report status -c {tlsrpt}", N, "no data yet"),
    ("report send -c {tlsrpt} --day 2026-01-01", N, "no data yet"),
    ("probe -c {plain} 'not a host'", U, "probe:"),
    ("generate -c {plain} --domain [192.0.2.1]", U, "is not a domain name"),
    ("generate -c {plain} --domain x.example --mx mx.x.example --write {notdir}", X, "--write"),
    ("publish -c {plain} 'not a domain'", U, "is not a domain name"),
    ("publish -c {plain} x.example --policy {missing}", U, "--policy"),
    ("publish -c {plain} x.example --policy {plain} --mode enforce", U, "as it is"),
    ("publish -c {plain} x.example --policy {plain} --mx mx.x.example", U, "as it is"),
    ("generate -c {plain} --domain x.example --mx mx.x.example --existing {dir}", U, "not a file"),
    ("reports-in -c {plain} --domain 'bad domain'", U, "is not a domain name"),
    ("reports-in readiness 'bad domain' -c {plain}", U, "is not a domain name"),
    ("reports-in readiness x.example -c {plain} --policy {missing}", U, "No such file"),
    ("reports-in readiness x.example -c {plain} --policy {binary}", U, "not UTF-8 text"),
    ("reports-in readiness x.example -c {plain} --policy {plain}", U, "--policy"),
    ("reports-in summary -c {plain}", N, "no reports received yet"),
    ("reports-in -c {plain} summary", N, "no reports received yet"),
    ("reports-in readiness -c {plain} 'bad domain'", U, "is not a domain name"),
    ("reports-in readiness -c {plain} x.example", U, "x.example is not one of your own domains"),
    ("reports-in readiness -c {reports_own} x.example", N, "no policy known for x.example"),
    ("reports-in readiness -c {plain}", U, "required: DOMAIN"),
    ("reports-in summary -c {plain} --domain x.example --html {notdir}/x.html", X, "--html"),
    # check and monitor are monitoring plugins: Nagios codes (3 UNKNOWN), README "Exit codes"
    ("check -c {plain} 'not a domain'", 3, "is not a domain name"),
    ("check -c {plain} example.test:25", 3, "'example.test:25' is not a domain name"),
    ("check -c {plain} --from-file {binary}", 3, "not UTF-8 text"),
    # the two domains in the file are checked (DNS on a loopback port nothing answers: UNKNOWN)
    (
        "check -c {plain} --from-file {domains} --nameserver 127.0.0.1:{port} --timeout 1",
        3,
        "domains.txt line 3: 'a..b' is not a domain name: not checked",
    ),
    ("check -c {plain} --from-file {missing}", 3, "cannot read"),
    ("check -c {plain}", 3, "no domain given"),
    ("check -c {plain} x.example --nameserver nonsense", U, "'nonsense' is not an IP address"),
    ("check -c {plain} x.example --ca-file {missing}", U, "--ca-file: CA file"),
    ("check -c {plain} x.example --ca-file {plain}", U, "is unusable"),  # no certificate in it
    ("publish -c {plain} x.example --nameserver 127.0.0.1:99999", U, "expected a number"),
    ("generate -c {plain} --domain x.example --nameserver nonsense", U, "not an IP address"),
    ("host status -c {empty_host}", 3, "no policies in"),
    ("reports-in -c {plain} --domain x.example --maildir {missing}", U, "is not a Maildir"),
    ("check -c {plain} [mx.example.test]", 3, "is not a domain name"),
    ("monitor -c {plain} --once", 3, "no domain"),
    ("monitor -c {plain} --once --domain [mx.example.test]", 3, "is not a domain name"),
    ("monitor -c {own_host} --once", 3, "'[mx.example.test]' is not a domain name"),
    ("check-config -c {own_host}", C, "own_domains[0].domain: expected a domain name"),
    ("check-config -c {own_table}", C, "own_domains: expected an array of tables"),
    ("check-config -c {bad_host}", C, "host.listen[0]: expected HOST:PORT"),
    ("check-config -c {bad_host}", C, "host.metrics_listen: metrics listener must be a loopback"),
    ("check-config -c {bad_host}", C, "host.reports_path: expected a URL path"),
    ("check-config -c {bad_host}", C, "host.acme_names[0]: expected a host name"),
    ("check-config -c {bad_local}", C, "discovery.ca_file: CA file"),
    ("check-config -c {bad_local}", C, "server.unix_group: group 'nosuchgroupxyz' does not"),
    ("check-config -c {bad_local}", C, "logging.file: the folder"),
    ("check-config -c {state_file}", C, "cache.state_dir: "),
    ("check-config -c {listed_twice}", C, "server.listen: 127.0.0.1:1 listed more than once"),
    (
        "serve -c {plain} --listen 127.0.0.1:1 --listen 127.0.0.1:1",
        C,
        "--listen: 127.0.0.1:1 listed",
    ),
    # port 0 would bind a random port: refused by every listen-type key and argument
    ("check-config -c {port_zero}", C, "server.listen[0]: '127.0.0.1:0': port '0': expected a"),
    ("check-config -c {bad_listens}", C, "server.listen[1]: expected unix:/absolute/path, got"),
    ("check-config -c {bad_listens}", C, "server.listen[2]: '::1': an IPv6 address goes in"),
    ("check-config -c {port_zero}", C, "metrics.listen: '127.0.0.1:0': port '0': expected"),
    ("check-config -c {port_zero}", C, "host.listen[0]: '[::]:0': port '0': expected"),
    ("check-config -c {port_zero}", C, "host.http_listen[0]: '0.0.0.0:0': port '0'"),
    ("check-config -c {port_zero}", C, "host.metrics_listen: '127.0.0.1:0': port '0': expected"),
    ("serve --listen 127.0.0.1:0 -c {missing}", U, "--listen: '127.0.0.1:0': port '0': expected"),
    ("query -c {plain} x.example --socketmap [::1]:0", U, "--socketmap: '[::1]:0': port '0'"),
    ("probe -c {plain} mx.example.test --address 127.0.0.1 --port {port} --timeout 2", T, ""),
]
JSON_COMMANDS = (
    *("query", "resolve", "cache list", "cache show", "check-config", "probe", "generate"),
    *("reports-in", "check", "host status"),
)


def _argv(template: str, files: dict[str, str]) -> list[str]:
    import shlex

    return shlex.split(template.format(**files))


@pytest.mark.parametrize(("template", "code", "said"), CASES, ids=[c[0] or "-" for c in CASES])
def test_bad_input_exits_with_the_documented_code(
    capsys: pytest.CaptureFixture[str], files: dict[str, str], template: str, code: int, said: str
) -> None:
    assert cli.main(_argv(template, files)) == code
    out, err = capsys.readouterr()
    assert said in out + err
    assert "Traceback" not in out + err
    assert "None" not in out + err


@pytest.mark.parametrize(
    ("template", "code"),
    [(t, c) for t, c, _ in CASES if t.startswith(JSON_COMMANDS) and c != ExitCode.USAGE]
    + [("query -c {plain}", ExitCode.USAGE)],
)
def test_json_errors_are_json(
    capsys: pytest.CaptureFixture[str], files: dict[str, str], template: str, code: int
) -> None:
    assert cli.main([*_argv(template, files), "--json"]) == code
    data = json.loads(capsys.readouterr().out)
    if isinstance(data, dict) and "exit_code" in data:
        assert data["exit_code"] == code


def test_check_config_lists_every_problem_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[cache]\ncold_wait = -1\nbogus = 1\n[server]\nlisten = ["nowhere"]\n'
        "[tlsrpt]\nenabled = true\nretention_days = 0\ncontact_info = 'nobody'\n"
        "[maillog]\ntimezone = 'Mars/Olympus'\n"
    )
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.CONFIG
    lines = capsys.readouterr().err.splitlines()
    named = [line.removeprefix(f"configuration error: {path}: ").split(":")[0] for line in lines]
    assert named == [  # a bad key in [tlsrpt] does not hide the checks across its other keys
        "cache.cold_wait",
        "cache.bogus",
        "tlsrpt.retention_days",
        "server.listen[0]",
        "tlsrpt.organization_name",
        "tlsrpt.envelope_sender",
        "tlsrpt.contact_info",
        "tlsrpt.dkim",
        "maillog.timezone",
    ]
    assert cli.main(["check-config", "-c", str(path), "--json"]) == ExitCode.CONFIG
    assert len(json.loads(capsys.readouterr().out)["problems"]) == len(named)


def test_check_config_runs_its_later_checks_beside_the_loaders(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bad value in the file does not hide what the checks after loading find (a CA file, a
    group of this machine): one run lists both, each once."""
    path = tmp_path / "c.toml"
    path.write_text(
        f'[server]\nlisten = ["unix:{tmp_path}/s.sock"]\nunix_group = "nosuchgroupxyz"\n'
        f'[cache]\nstate_dir = "relative"\n[discovery]\nca_file = "{tmp_path}/none.pem"\n'
        '[[own_domains]]\ndomain = "bad name"\n'
    )
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.CONFIG
    lines = capsys.readouterr().err.splitlines()
    named = [line.removeprefix(f"configuration error: {path}: ").split(":")[0] for line in lines]
    assert named == [
        "cache.state_dir",
        "own_domains[0].domain",
        "discovery.ca_file",
        "server.unix_group",
    ]


def test_check_config_lists_the_checks_on_disk_and_names_together(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The checks after loading (a DKIM key that cannot be read, a name that is no domain) are
    listed together too, each under the file's name like the loader's."""
    path = tmp_path / "c.toml"
    path.write_text(
        TLSRPT_ON.replace("allow_unsigned = true", "")
        + f'[tlsrpt.dkim]\ndomain = "example.test"\nselector = "s"\n'
        f'key_file = "{tmp_path / "absent.pem"}"\n[reports_in]\ndomains = ["a..b"]\n'
        f'[cache]\nstate_dir = "{tmp_path}"\n'
    )
    assert cli.main(["check-config", "-c", str(path)]) == ExitCode.CONFIG
    lines = capsys.readouterr().err.splitlines()
    named = [line.removeprefix(f"configuration error: {path}: ").split(":")[0] for line in lines]
    assert named == ["tlsrpt.dkim.key_file", "reports_in.domains[0]"]


def test_top_level_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "policy daemon and TLS reporter" in out and "exit codes: 0 found/ok" in out
    assert "tests call it directly" not in out


def test_a_closed_pipe_ends_quietly(files: dict[str, str]) -> None:
    """`check-config | head`: the reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [*COMMAND, "check-config", "-c", files["plain"]],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(None),
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == ExitCode.PIPE_CLOSED


def test_the_storage_errors_use_the_table() -> None:
    """`serve`'s 69 and 73 come from the errors it raises; they are rows of the one table."""
    from mta_sts_policyd.errors import StateLockedError, StateUnusableError

    assert StateLockedError.exit_code == ExitCode.UNAVAILABLE
    assert StateUnusableError.exit_code == ExitCode.CANT_CREATE
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for code in ExitCode:
        assert f"\n| {int(code)} | " in readme, f"README exit-code table lacks {int(code)}"
