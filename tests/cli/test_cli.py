"""The command line (issue 3 item 6): exit codes 0 found/ok, 1 no policy, 64 usage, 75 temporary
failure, 78 config error; `--json` on read commands; `--listen`/`--state-dir` overrides.

Most commands run in-process through `cli.main(argv)` (fast); the exit-code contract that
systemd and scripts see is checked on the real console entry point as well. `query` and `cache`
talk to a real daemon process on loopback.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import StsWorld
from mta_sts_policyd import __version__
from mta_sts_policyd.cli import main as cli
from mta_sts_policyd.config.settings import Config, config_as_dict, config_from_mapping
from support import REPO_ROOT
from support.daemon_process import DaemonProcess
from support.ports import free_port

ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
ENFORCE_DATA = "secure match=mail.example.test servername=hostname"
SAMPLE = REPO_ROOT / "postfix-examples" / "config.toml"


@pytest.fixture
def world(sts_world: StsWorld) -> StsWorld:
    sts_world.publish("example.test", ENFORCE)
    sts_world.dns.set_mx("example.test", (10, "mail.example.test"))
    return sts_world


@pytest.fixture
def daemon(world: StsWorld) -> Iterator[DaemonProcess]:
    """Configured (config.toml written) but not started."""
    with DaemonProcess.for_servers(world.dns, world.https) as process:
        yield process


@pytest.fixture
def running(daemon: DaemonProcess) -> DaemonProcess:
    """Started, with example.test cached."""
    daemon.start()
    assert daemon.query("example.test") == f"OK {ENFORCE_DATA}".encode()
    return daemon


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


# --- version, usage ----------------------------------------------------------------------------


def test_version_on_the_console_entry_point(daemon: DaemonProcess) -> None:
    done = daemon.cli("--version")
    assert (done.returncode, done.stdout) == (0, f"mta-sts-policyd {__version__}\n")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["query"],
        ["cache"],
        ["cache", "show"],
        ["cache", "list", "extra"],
        ["serve", "--bogus"],
        ["query", "example.test", "--timeout", "soon"],
        ["resolve", "example.test", "--listen", "127.0.0.1:1"],
    ],
)
def test_usage_errors_exit_64(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 64
    assert out == ""
    assert "usage: mta-sts-policyd" in err


def test_usage_error_on_the_console_entry_point(daemon: DaemonProcess) -> None:
    done = daemon.cli("cache", "show")
    assert done.returncode == 64
    assert "the following arguments are required: domain" in done.stderr


# --- check-config ------------------------------------------------------------------------------


def test_check_config_of_the_sample_prints_the_effective_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "check-config", "-c", str(SAMPLE))
    assert code == 0
    assert out.startswith(f"# effective configuration from {SAMPLE}\n")
    assert config_from_mapping(tomllib.loads(out)) == Config()
    code, data = run_json(capsys, "check-config", "-c", str(SAMPLE))
    assert (code, data) == (0, config_as_dict(Config()))


def test_check_config_shows_command_line_overrides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, data = run_json(capsys, "check-config", "-c", str(SAMPLE), "--state-dir", str(tmp_path))
    assert code == 0
    assert data["cache"]["state_dir"] == str(tmp_path)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('[server]\nlisten = ["127.0.0.1:8463"]\nlistne = []\n', "server.listne: unknown key"),
        ('[cache]\ncold_wait = "3s"\n', "cache.cold_wait: expected a number"),
        ("[discovery]\nfetch_timeout = 120\n", "discovery.fetch_timeout: expected a number of sec"),
        (
            "[cache]\nflush_interval = inf\n",
            "cache.flush_interval: expected a number of seconds from 0.1 to 3600, got inf",
        ),
        ('[cache]\nstate_dir = ""\n', "cache.state_dir: expected a directory path (not empty)"),
        (
            "[cache]\nmax_entries = 100000000000000000000\n",
            "cache.max_entries: expected a whole "
            "number from 1 to 100000000, got 100000000000000000000",
        ),
        ('[server]\nsts_attributes = "yes"\n', "server.sts_attributes: expected one of"),
        ('[metrics]\nlisten = "0.0.0.0:9463"\n', "metrics.listen: expected a loopback"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_check_config_of_a_bad_file_exits_78_naming_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content)
    code, out, err = run(capsys, "check-config", "-c", str(path))
    assert code == 78
    assert out == ""
    assert err.startswith(f"configuration error: {path}: ")
    assert named in err


def test_config_errors_exit_78_on_the_console_entry_point(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    missing = daemon.cli("check-config", "-c", str(tmp_path / "absent.toml"))
    assert missing.returncode == 78
    assert "absent.toml: no such file" in missing.stderr
    daemon.config_path.write_text("[cache]\nnegative_ttl = -5\n")
    bad = daemon.cli("serve", "-c", str(daemon.config_path))  # what RestartPreventExitStatus sees
    assert bad.returncode == 78
    assert "cache.negative_ttl: expected a number of seconds from 0 to 604800, got -5" in bad.stderr


def test_serve_with_an_unusable_state_dir_exits_73(daemon: DaemonProcess) -> None:
    """EX_CANTCREAT, not 78: the state directory may become usable without a config change."""
    blocker = daemon.workdir / "a-file"
    blocker.write_text("")
    done = daemon.cli("serve", "-c", str(daemon.config_path), "--state-dir", str(blocker / "x"))
    assert done.returncode == 73
    assert "cache.state_dir: cannot create" in done.stderr
    assert "Not a directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_an_address_in_use_exits_75_with_one_line(daemon: DaemonProcess) -> None:
    """Another instance still holding the port is a temporary condition, not a crash."""
    with socket.create_server(("127.0.0.1", daemon.port)):
        done = daemon.cli("serve", "-c", str(daemon.config_path))
    assert done.returncode == 75
    assert "Traceback" not in done.stderr
    assert "event=start-failed" in done.stderr
    assert f"cannot listen on 127.0.0.1:{daemon.port}: Address already in use" in done.stderr
    assert "attempting to bind" not in done.stderr  # the address once, not twice


def test_serve_on_an_address_that_cannot_be_resolved_names_it(daemon: DaemonProcess) -> None:
    daemon.write_config(server={"listen": ["999.1.1.1:25"]})
    done = daemon.cli("serve", "-c", str(daemon.config_path))
    assert done.returncode == 75 and "cannot listen on 999.1.1.1:25: " in done.stderr


# --- serve overrides -----------------------------------------------------------------------------


def test_serve_listen_and_state_dir_overrides(daemon: DaemonProcess) -> None:
    port = free_port()
    state = daemon.workdir / "other-state"
    daemon.start("--listen", f"127.0.0.1:{port}", "--state-dir", str(state))
    assert (
        daemon.query("example.test", address=f"127.0.0.1:{port}") == f"OK {ENFORCE_DATA}".encode()
    )
    with pytest.raises(ConnectionRefusedError):
        daemon.query("example.test")  # the file's server.listen is overridden
    assert (state / "control.sock").exists()
    assert daemon.stop() == 0
    assert (state / "policies.sqlite").exists()
    assert not daemon.state_dir.exists()


# --- query -------------------------------------------------------------------------------------


def test_query_the_running_daemon(
    capsys: pytest.CaptureFixture[str], running: DaemonProcess
) -> None:
    config = str(running.config_path)
    assert run(capsys, "query", "-c", config, "example.test") == (0, ENFORCE_DATA + "\n", "")
    code, out, err = run(capsys, "query", "-c", config, "nothing.test")
    assert (code, out, err.strip()) == (1, "", "NOTFOUND")
    assert run(capsys, "query", "-c", config, ".example.test")[0] == 1  # RFC 8461 §3.4
    code, data = run_json(capsys, "query", "-c", config, "[example.test]:25")
    assert code == 0
    assert data == {
        "domain": "[example.test]:25",
        "status": "OK",
        "data": ENFORCE_DATA,
        "reply": f"OK {ENFORCE_DATA}",
        "exit_code": 0,
    }
    code, data = run_json(capsys, "query", "--socketmap", running.address, "nothing.test")
    assert (code, data["status"], data["data"]) == (1, "NOTFOUND", "")


def test_query_takes_the_socketmap_address_as_postfix_writes_it(
    capsys: pytest.CaptureFixture[str], running: DaemonProcess
) -> None:
    """`inet:HOST:PORT`, pasted from `smtp_tls_policy_maps = socketmap:inet:...:postfix`, was
    refused as an IPv6 address without brackets."""
    code, out, _ = run(capsys, "query", "--socketmap", f"inet:{running.address}", "example.test")
    assert (code, out) == (0, ENFORCE_DATA + "\n")


def test_query_over_a_unix_socket(
    capsys: pytest.CaptureFixture[str], daemon: DaemonProcess
) -> None:
    path = daemon.workdir / "sm.sock"
    daemon.write_config(server={"listen": [f"unix:{path}"]})
    daemon.start()
    code, out, _ = run(capsys, "query", "-c", str(daemon.config_path), "example.test")
    assert (code, out) == (0, ENFORCE_DATA + "\n")


def test_query_exits_75_when_nothing_listens(
    capsys: pytest.CaptureFixture[str], daemon: DaemonProcess
) -> None:
    code, out, err = run(capsys, "query", "-c", str(daemon.config_path), "example.test")
    assert (code, out) == (75, "")
    assert f"cannot ask the daemon at {daemon.address}" in err
    done = daemon.cli("query", "--socketmap", f"unix:{daemon.workdir}/none.sock", "example.test")
    assert done.returncode == 75


# --- resolve -----------------------------------------------------------------------------------


def test_resolve_explains_every_step(
    capsys: pytest.CaptureFixture[str], daemon: DaemonProcess, world: StsWorld
) -> None:
    code, data = run_json(capsys, "resolve", "-c", str(daemon.config_path), "Example.Test.")
    assert code == 0
    assert (data["key"], data["policy_domain"], data["exit_code"]) == (
        "Example.Test.",
        "example.test",
        0,
    )
    assert data["reply"] == f"OK {ENFORCE_DATA}"
    txt, https, mx = data["steps"]
    assert txt["step"] == "TXT _mta-sts.example.test" and txt["ok"]
    assert txt["records"] == ["v=STSv1; id=1"] and txt["result"] == "id=1"
    assert https["ok"] and https["status"] == 200 and https["mode"] == "enforce"
    assert https["mx"] == ["mail.example.test"] and https["max_age"] == 86400
    assert https["step"].startswith("HTTPS https://mta-sts.example.test")
    assert mx["ok"] and mx["hosts"] == ["mail.example.test -> mail.example.test"]
    code, out, _ = run(capsys, "resolve", "-c", str(daemon.config_path), "example.test")
    assert code == 0
    assert out.splitlines()[-1] == f"Postfix would get: OK {ENFORCE_DATA}"
    assert "ok TXT _mta-sts.example.test" in out
    assert world.https.request_count("mta-sts.example.test") == 2  # resolve never caches


def test_resolve_no_policy_exits_1(
    capsys: pytest.CaptureFixture[str], daemon: DaemonProcess, world: StsWorld
) -> None:
    config = str(daemon.config_path)
    code, data = run_json(capsys, "resolve", "-c", config, "nothing.test")
    assert (code, data["reply"]) == (1, "NOTFOUND ")
    assert data["steps"][0]["ok"] is False
    code, data = run_json(capsys, "resolve", "-c", config, ".example.test")
    assert code == 1
    assert data["policy_domain"] is None and data["steps"][0]["step"] == "key"
    world.publish("html.test", ENFORCE, content_type="text/html")
    code, data = run_json(capsys, "resolve", "-c", config, "html.test")
    assert code == 1  # RFC 8461 §3.2: an invalid policy is "no policy", not a temporary failure
    assert data["steps"][1]["result_type"] == "sts-policy-invalid"
    long = ".".join(["a" * 63] * 3 + ["b" * 50]) + ".test"  # a name; its _mta-sts name is not
    code, data = run_json(capsys, "resolve", "-c", config, long)
    assert (code, data["temporary"], data["reply"]) == (1, False, "NOTFOUND ")
    assert "longer than a DNS name can be" in data["steps"][0]["result"]


def test_resolve_dns_servfail_exits_75(
    capsys: pytest.CaptureFixture[str], daemon: DaemonProcess, world: StsWorld
) -> None:
    world.dns.fail("_mta-sts.broken.test", "servfail")
    code, data = run_json(capsys, "resolve", "-c", str(daemon.config_path), "broken.test")
    assert (code, data["exit_code"], data["reply"]) == (75, 75, "NOTFOUND ")
    assert data["steps"][0]["ok"] is False and data["steps"][0]["error"]
    assert data["ok"] is False and data["error"].startswith("TXT _mta-sts.broken.test: ")
    world.publish("down.test", ENFORCE, status=503)
    code, data = run_json(capsys, "resolve", "-c", str(daemon.config_path), "down.test")
    assert code == 75
    assert data["steps"][1]["result_type"] == "sts-policy-fetch-error"


# --- cache -------------------------------------------------------------------------------------


def test_cache_list_and_show(capsys: pytest.CaptureFixture[str], running: DaemonProcess) -> None:
    config = str(running.config_path)
    code, data = run_json(capsys, "cache", "list", "-c", config)
    assert code == 0 and data["ok"]
    (entry,) = data["entries"]
    assert (entry["domain"], entry["mode"], entry["id"], entry["failure"]) == (
        "example.test",
        "enforce",
        "1",
        None,
    )
    assert entry["expires_at"] - entry["fetched_at"] == 86400
    deadline = time.monotonic() + 5
    while data["stored"] == 0 and time.monotonic() < deadline:  # written within flush_interval
        time.sleep(0.1)
        data = run_json(capsys, "cache", "list", "-c", config)[1]
    assert (data["memory"], data["stored"]) == (1, 1)  # both tiers counted
    code, out, _ = run(capsys, "cache", "list", "-c", config)
    assert code == 0
    header, row, total = out.splitlines()
    assert header.split() == ["DOMAIN", "MODE", "ID", "EXPIRES", "TXT", "CHECKED", "FAILURE"]
    assert row.split()[:5] == ["example.test", "enforce", "1", "in", "23h59m"]
    assert row.split()[-1] == "-"
    assert total.startswith("1 in memory, 1 in the store on disk")

    code, data = run_json(capsys, "cache", "show", "-c", config, "EXAMPLE.test.")
    assert code == 0
    shown = data["entry"]
    assert shown["domain"] == "example.test" and shown["mx"] == ["mail.example.test"]
    assert shown["policy_lines"] == ENFORCE.splitlines()
    assert shown["reply"] == f"OK {ENFORCE_DATA}"
    code, out, _ = run(capsys, "cache", "show", "-c", config, "example.test")
    assert code == 0
    assert "domain:      example.test\n" in out and f"reply:       OK {ENFORCE_DATA}\n" in out
    assert "policy:      version: STSv1\n             mode: enforce\n" in out
    assert re.search(r"^expires:     \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in 23h59m\)$", out, re.M)
    assert "failure:     -\n" in out
    assert "None" not in out and "{" not in out and "\n\n" not in out


def test_cache_show_of_an_unknown_domain_exits_1(
    capsys: pytest.CaptureFixture[str], running: DaemonProcess
) -> None:
    code, data = run_json(capsys, "cache", "show", "-c", str(running.config_path), "unknown.test")
    assert code == 1
    assert data == {
        "ok": False,
        "error": "unknown.test is not in the cache",
        "missing": True,
        "exit_code": 1,
    }
    code, out, err = run(capsys, "cache", "show", "-c", str(running.config_path), "unknown.test")
    assert (code, out) == (1, "")
    assert "unknown.test is not in the cache" in err


def test_cache_refresh_fetches_now(
    capsys: pytest.CaptureFixture[str], running: DaemonProcess, world: StsWorld
) -> None:
    world.publish("example.test", ENFORCE.replace("mail.", "mx2."), txt="v=STSv1; id=2")
    code, data = run_json(
        capsys, "cache", "refresh", "-c", str(running.config_path), "example.test"
    )
    assert code == 0
    assert (data["entry"]["id"], data["entry"]["mx"]) == ("2", ["mx2.example.test"])
    assert running.query("example.test") == b"OK secure match=mx2.example.test servername=hostname"
    code, out, _ = run(capsys, "cache", "refresh", "-c", str(running.config_path), "nothing.test")
    assert (code, out) == (1, "no policy\n")  # the same code as `query` and `resolve`
    assert world.https.request_count("mta-sts.example.test") == 2


def test_cache_purge_one_and_all(
    capsys: pytest.CaptureFixture[str], running: DaemonProcess, world: StsWorld
) -> None:
    config = str(running.config_path)
    world.publish("other.test", ENFORCE)
    assert running.query("other.test").startswith(b"OK secure")
    code, data = run_json(capsys, "cache", "purge", "-c", config, "example.test")
    assert (code, data) == (0, {"ok": True, "purged": 1, "exit_code": 0})
    code, out, _ = run(capsys, "cache", "purge", "-c", config, "example.test")  # gone already
    assert (code, out) == (1, "purged 0 policies\n")
    assert run(capsys, "cache", "show", "-c", config, "example.test")[0] == 1
    code, data = run_json(capsys, "cache", "list", "-c", config)
    assert [e["domain"] for e in data["entries"]] == ["other.test"]
    assert run(capsys, "cache", "purge", "-c", config) == (0, "purged 1 policy\n", "")
    assert run_json(capsys, "cache", "list", "-c", config)[1]["entries"] == []
    assert running.query("example.test").startswith(b"OK secure")  # fetched again
    assert world.https.request_count("mta-sts.example.test") == 2


@pytest.mark.fault
def test_a_purge_is_seen_by_list_at_once_and_holds_when_the_daemon_is_killed(
    capsys: pytest.CaptureFixture[str], daemon: DaemonProcess
) -> None:
    """`cache purge D` then `cache list`: D is neither listed nor counted, without waiting for
    the next flush (an hour here), and a daemon killed right after does not bring D back."""
    config = str(daemon.config_path)
    daemon.write_config(cache={"flush_interval": 3600.0})
    daemon.start()
    assert daemon.query("example.test").startswith(b"OK secure")
    assert daemon.stop() == 0  # SIGTERM writes the cache: example.test is on disk
    daemon.start()
    data = run_json(capsys, "cache", "list", "-c", config)[1]
    assert (data["memory"], data["stored"]) == (1, 1)
    assert run(capsys, "cache", "purge", "-c", config, "example.test")[:2] == (
        0,
        "purged 1 policy\n",
    )
    data = run_json(capsys, "cache", "list", "-c", config)[1]
    assert (data["entries"], data["memory"], data["stored"]) == ([], 0, 0)
    assert run(capsys, "cache", "list", "-c", config)[1].endswith(
        "0 in memory, 0 in the store on disk (the store holds every cached policy;"
        " memory the most recently used)\n"
    )
    assert run(capsys, "cache", "purge", "-c", config, "example.test")[0] == 1  # gone already
    daemon.stop(signal.SIGKILL)  # no flush at exit
    daemon.start()
    assert run_json(capsys, "cache", "list", "-c", config)[1]["stored"] == 0


def test_a_purge_not_yet_on_disk_says_so_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from mta_sts_policyd.cli.cache import print_cache_response
    from mta_sts_policyd.cli.exit_codes import ExitCode
    from mta_sts_policyd.service.control import STORE_WARNING

    response = {"ok": True, "purged": 1, "store_warning": STORE_WARNING}
    print_cache_response("purge", response, ExitCode.OK, time.time())
    assert capsys.readouterr() == ("purged 1 policy\n", f"cache purge: {STORE_WARNING}\n")


def test_cache_commands_exit_75_when_the_daemon_is_not_running(
    capsys: pytest.CaptureFixture[str], daemon: DaemonProcess
) -> None:
    config = str(daemon.config_path)
    for argv in (["list"], ["show", "example.test"], ["purge"], ["refresh", "example.test"]):
        code, out, err = run(capsys, "cache", *argv, "-c", config)
        assert (code, out) == (75, ""), argv
        assert f"not reachable at {daemon.control_path}" in err


def test_cache_state_dir_override_finds_the_daemon(
    capsys: pytest.CaptureFixture[str], running: DaemonProcess, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(f'[cache]\nstate_dir = "{tmp_path}"\n')
    assert run(capsys, "cache", "list", "-c", str(other))[0] == 75
    code, data = run_json(
        capsys, "cache", "list", "-c", str(other), "--state-dir", str(running.state_dir)
    )
    assert code == 0 and [e["domain"] for e in data["entries"]] == ["example.test"]


def test_the_same_answer_gives_the_same_code_everywhere(
    capsys: pytest.CaptureFixture[str], running: DaemonProcess, world: StsWorld
) -> None:
    """A `testing` domain is "no policy" for Postfix, so every command exits 1 for it; an
    enforce domain exits 0 from all of them."""
    world.publish("testing.test", ENFORCE.replace("enforce", "testing"))
    config = str(running.config_path)
    for domain, code in (("testing.test", 1), ("example.test", 0), (".example.test", 1)):
        assert run(capsys, "query", "-c", config, domain)[0] == code, domain
        assert run(capsys, "resolve", "-c", config, domain)[0] == code, domain
        assert run(capsys, "cache", "refresh", "-c", config, domain)[0] == code, domain
        assert run(capsys, "cache", "show", "-c", config, domain)[0] == code, domain


def test_cache_refresh_when_dns_fails_exits_75(
    capsys: pytest.CaptureFixture[str], running: DaemonProcess, world: StsWorld
) -> None:
    world.dns.fail("_mta-sts.broken.test", "servfail")
    config = str(running.config_path)
    assert run(capsys, "resolve", "-c", config, "broken.test")[0] == 75
    code, out, _ = run(capsys, "cache", "refresh", "-c", config, "broken.test")
    assert (code, out) == (75, "could not find out (DNS failed)\n")
    code, data = run_json(capsys, "cache", "refresh", "-c", config, "broken.test")
    assert (code, data["ok"], data["exit_code"]) == (75, False, 75) and data["error"]
