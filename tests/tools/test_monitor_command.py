"""`monitor --once` against loopback servers: state file, transitions only, alerts, gauges."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from prometheus_client import generate_latest

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.config.toml_schema import toml_value
from mta_sts_policyd.metrics import REGISTRY
from support.check_world import CheckWorld, check_world, enforce_policy
from support.dns_server import DnsServer
from support.tlsrpt_receivers import SmtpReceiver

D, MX1, MX2 = "example.test", "mx1.example.test", "mx2.example.test"
RECORDER = """import sys
with open(sys.argv[1], "a") as out:
    out.write(sys.stdin.read() + "\\n===\\n")
"""


@pytest.fixture
async def world(dns_server: DnsServer, trust_ca: trustme.CA) -> AsyncIterator[CheckWorld]:
    async with check_world(dns_server, trust_ca) as w:
        yield w


def _config(
    tmp_path: Path, relay_port: int, recorder: Path, out: Path, command: list[str] | None = None
) -> Path:
    """Both alert channels: mail through the relay, and the recorder (or `command`)."""
    path = tmp_path / "config.toml"
    command = command or [sys.executable, str(recorder), str(out)]
    path.write_text(
        f'[[own_domains]]\ndomain = "{D}"\n\n[monitor]\n'
        f'alert_mail_to = ["hostmaster@example.test"]\n'
        f'smtp_relay = "127.0.0.1:{relay_port}"\n'
        f"alert_command = {toml_value(command)}\n"
    )
    return path


async def _monitor(world: CheckWorld, config: Path, state: Path) -> tuple[int, str]:
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return main(
                [
                    "monitor",
                    "--once",
                    "-c",
                    str(config),
                    "--state-file",
                    str(state),
                    *world.base_args(),
                ]
            )

    code = await asyncio.to_thread(call)
    return code, out.getvalue()


async def test_monitor_alerts_on_transitions_only(world: CheckWorld, tmp_path: Path) -> None:
    await world.mx_server(MX1)
    mx2 = await world.mx_server(MX2)
    world.publish(D, enforce_policy(MX1, MX2), mx=[MX1, MX2])
    recorder, alerts, state = tmp_path / "rec.py", tmp_path / "alerts.txt", tmp_path / "s.json"
    recorder.write_text(RECORDER)
    with SmtpReceiver() as relay:
        config = _config(tmp_path, relay.port, recorder, alerts)
        code, out = await _monitor(world, config, state)
        assert (code, out.strip()) == (0, f"{D}: OK (no findings)")
        assert not alerts.exists() and relay.sink.messages == []

        world.dns.set_mx(D, (10, MX1), (20, MX2), (30, "mx3.example.test"))  # drift
        code, out = await _monitor(world, config, state)
        assert code == 2
        assert f"{D}: new critical MX_NOT_COVERED" in out
        first = json.loads(alerts.read_text().split("\n===\n")[0])
        assert sorted(t["code"] for t in first) == ["MX_NOT_COVERED", "MX_NO_ADDRESS"]
        [sent] = [t for t in first if t["code"] == "MX_NOT_COVERED"]
        assert (sent["change"], sent["code"], sent["evidence"]["mx"]) == (
            "new",
            "MX_NOT_COVERED",
            "mx3.example.test",
        )
        [(_sender, recipients, mail)] = relay.sink.messages
        assert recipients == ["hostmaster@example.test"] and b"MX_NOT_COVERED" in mail

        code, out = await _monitor(world, config, state)  # same findings: silent
        assert code == 2 and "MX_NOT_COVERED" not in out
        assert alerts.read_text().count("===") == 1 and len(relay.sink.messages) == 1

        world.dns.set_mx(D, (10, MX1), (20, MX2))
        code, out = await _monitor(world, config, state)
        assert code == 0 and f"{D}: resolved critical MX_NOT_COVERED" in out
        assert alerts.read_text().count("===") == 2
    assert mx2.record.connections >= 4  # every pass really checked the MX
    saved = json.loads(state.read_text())
    assert saved["domains"][D]["status"] == "OK" and saved["domains"][D]["findings"] == {}
    metrics = generate_latest(REGISTRY).decode()
    assert f'mta_sts_policyd_own_domain_status{{domain="{D}"}} 0.0' in metrics
    assert f'mta_sts_policyd_own_domain_findings{{domain="{D}",severity="critical"}} 0.0' in metrics
    assert f'own_domain_certificate_days_left{{domain="{D}",host="{MX1}",kind="mx"}}' in metrics
    assert f'mta_sts_policyd_own_domain_last_success_timestamp_seconds{{domain="{D}"}}' in metrics
    assert f'mta_sts_policyd_own_domain_policy_age_seconds{{domain="{D}"}}' in metrics


async def test_monitor_without_domains_or_with_a_broken_state(
    world: CheckWorld, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert await asyncio.to_thread(main, ["monitor", "--once", "-c", str(empty)]) == 3
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    state = tmp_path / "state.json"
    state.write_text("{not json")

    def call() -> int:
        return main(
            [
                "monitor",
                "--once",
                "--domain",
                D,
                "-c",
                str(empty),
                "--state-file",
                str(state),
                *world.base_args(),
            ]
        )

    assert await asyncio.to_thread(call) == 0
    assert (tmp_path / "state.json.broken").read_text() == "{not json"  # kept, not lost
    assert json.loads(state.read_text())["version"] == 1
    state.write_text("[]")  # broken again: the first broken file stays as it was
    assert await asyncio.to_thread(call) == 0
    assert (tmp_path / "state.json.broken").read_text() == "{not json"
    assert (tmp_path / "state.json.broken.1").read_text() == "[]"


async def test_monitor_inside_serve(world: CheckWorld, tmp_path: Path) -> None:
    """`[monitor] in_serve`: the daemon's optional parts start the loop; a first pass runs at
    once, writes the state file and publishes the gauges; the closer stops it."""
    from mta_sts_policyd.config.settings import config_from_mapping
    from mta_sts_policyd.service.own_domains import start_monitor

    await world.mx_server(MX1)
    world.publish("serve.test", enforce_policy(MX1), mx=[MX1])
    config = config_from_mapping(
        {
            "own_domains": [{"domain": "serve.test"}],
            "monitor": {"in_serve": True, "allow_private": True, "interval": 3600.0},
            "cache": {"state_dir": str(tmp_path)},
            "discovery": {
                "nameservers": [world.dns.nameserver],
                "ca_file": world.ca_file,
                "https_port": world.https_port,
            },
            "probe": {"port": world.smtp_port},
        }
    )
    close = await start_monitor(config)
    state = tmp_path / "monitor.json"
    for _ in range(200):
        if state.exists():
            break
        await asyncio.sleep(0.05)
    await close()
    saved = json.loads(state.read_text())["domains"]["serve.test"]
    assert saved["status"] == "OK" and saved["findings"] == {}
    assert 'own_domain_status{domain="serve.test"} 0.0' in generate_latest(REGISTRY).decode()


async def test_the_loop_sleeps_a_jittered_interval_and_outlives_a_failed_pass(
    tmp_path: Path,
) -> None:
    """`monitor` without --once: every interval plus or minus the jitter (so many machines do
    not check at the same instant), and a pass that crashes does not end the monitoring."""
    from mta_sts_policyd.tools.monitor.alerts import AlertSettings
    from mta_sts_policyd.tools.monitor.run import StateFile, run_forever
    from mta_sts_policyd.tools.monitor.state import Saved

    class FlakyState(StateFile):
        loads = 0

        def load(self) -> Saved:
            self.loads += 1
            if self.loads == 1:
                raise RuntimeError("first pass breaks")
            return super().load()

    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 30:
            raise asyncio.CancelledError

    state = FlakyState(tmp_path / "monitor.json")
    with pytest.raises(asyncio.CancelledError):
        await run_forever(
            [],
            None,
            state,
            AlertSettings(),
            interval=7200,
            jitter=900,
            sleep=sleep,  # type: ignore[arg-type]
        )
    assert state.loads == 30 and (tmp_path / "monitor.json").is_file()
    assert all(6300 <= d <= 8100 for d in delays) and len(set(delays)) > 20


def _own_config(tmp_path: Path, *domains: str, command: list[str] | None = None) -> Path:
    path = tmp_path / "own.toml"
    text = "".join(f'[[own_domains]]\ndomain = "{d}"\n' for d in domains)
    if command is not None:
        text += f"[monitor]\nalert_command = {toml_value(command)}\n"
    path.write_text(text)
    return path


async def test_a_state_file_path_that_is_a_directory_is_unknown_and_left_alone(
    world: CheckWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a file that is no monitor state is moved aside; a path that cannot be read at all
    is an error (3), and nothing is renamed or written in its place."""
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    folder = tmp_path / "a-folder"
    (folder / "keep").mkdir(parents=True)
    code, _ = await _monitor(world, _own_config(tmp_path, D), folder)
    assert code == 3
    assert "cannot read the monitor state" in capsys.readouterr().err
    assert folder.is_dir() and (folder / "keep").is_dir()
    assert sorted(os.listdir(tmp_path)) == ["a-folder", "own.toml"]


async def test_a_pass_over_named_domains_keeps_the_others_history(
    world: CheckWorld, tmp_path: Path
) -> None:
    other = "other.test"
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    world.publish(other, enforce_policy(MX1), mx=[MX1, "mx9.other.test"])  # a finding
    config, state = _own_config(tmp_path, D, other), tmp_path / "state.json"
    code, out = await _monitor(world, config, state)
    assert code == 2 and f"{other}: new" in out
    saved = json.loads(state.read_text())["domains"]

    def one_off() -> int:
        return main(
            ["monitor", "--once", "--domain", D, "-c", str(config), "--state-file", str(state),
             *world.base_args()]
        )  # fmt: skip

    assert await asyncio.to_thread(one_off) == 0
    assert json.loads(state.read_text())["domains"][other] == saved[other]
    code, out = await _monitor(world, config, state)  # the full pass: nothing is new
    assert code == 2 and "new" not in out


async def test_alerts_that_could_not_be_delivered_are_sent_with_the_next_pass(
    world: CheckWorld, tmp_path: Path
) -> None:
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    state, alerts = tmp_path / "state.json", tmp_path / "alerts.txt"
    failing = _own_config(tmp_path, D, command=[sys.executable, "-c", "raise SystemExit(1)"])
    assert (await _monitor(world, failing, state))[0] == 0
    world.dns.set_mx(D, (10, MX1), (20, "mx3.example.test"))  # drift: new findings
    code, out = await _monitor(world, failing, state)
    assert code == 2 and f"{D}: new critical MX_NOT_COVERED" in out
    kept = json.loads(state.read_text())["unsent_by_channel"]["command"]
    assert "MX_NOT_COVERED" in {t["code"] for t in kept}
    (tmp_path / "rec.py").write_text(RECORDER)
    working = _own_config(
        tmp_path, D, command=[sys.executable, str(tmp_path / "rec.py"), str(alerts)]
    )
    code, out = await _monitor(world, working, state)  # nothing new, but the kept ones go out
    assert code == 2 and "new" not in out
    delivered = json.loads(alerts.read_text().split("\n===\n")[0])
    assert delivered == kept
    assert json.loads(state.read_text())["unsent_by_channel"] == {}


async def test_a_retry_goes_only_through_the_channel_that_failed(
    world: CheckWorld, tmp_path: Path
) -> None:
    """The mail went out and the command failed: the next pass runs the command with the kept
    transitions and sends no second mail (both channels were retried)."""
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    state, alerts, recorder = tmp_path / "state.json", tmp_path / "alerts.txt", tmp_path / "rec.py"
    recorder.write_text(RECORDER)
    with SmtpReceiver() as relay:
        failing_command = [sys.executable, "-c", "raise SystemExit(1)"]
        failing = _config(tmp_path, relay.port, recorder, alerts, command=failing_command)
        assert (await _monitor(world, failing, state))[0] == 0
        world.dns.set_mx(D, (10, MX1), (20, "mx3.example.test"))  # drift: new findings
        assert (await _monitor(world, failing, state))[0] == 2
        assert len(relay.sink.messages) == 1
        kept = json.loads(state.read_text())
        working = _config(tmp_path, relay.port, recorder, alerts)
        code, out = await _monitor(world, working, state)  # nothing new; the kept ones go out
        assert code == 2 and "new" not in out
        assert len(relay.sink.messages) == 1  # the mail that was delivered is not sent again
    delivered = json.loads(alerts.read_text().split("\n===\n")[0])
    assert "MX_NOT_COVERED" in {t["code"] for t in delivered}
    assert kept["unsent_by_channel"] == {"command": delivered}
    assert json.loads(state.read_text())["unsent_by_channel"] == {}


async def test_the_configured_allow_private_applies_unless_the_command_line_says_otherwise(
    world: CheckWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`[monitor] allow_private = true` without `--allow-private` contacts the loopback
    servers (it printed ADDRESS_NOT_PUBLIC, exit 3); `--no-allow-private` overrides the file."""
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    config = tmp_path / "mon.toml"
    config.write_text(f'[[own_domains]]\ndomain = "{D}"\n[monitor]\nallow_private = true\n')
    network = [a for a in world.base_args() if a != "--allow-private"]

    def call(*extra: str) -> int:
        state = str(tmp_path / "state.json")
        return main(["monitor", "--once", "-c", str(config), "--state-file", state, *network,
                     *extra])  # fmt: skip

    assert await asyncio.to_thread(call) == 0
    assert f"{D}: OK (no findings)" in capsys.readouterr().out
    assert await asyncio.to_thread(call, "--no-allow-private") == 3
    assert "ADDRESS_NOT_PUBLIC" in capsys.readouterr().out


async def test_alert_command_is_split_like_a_shell_line_and_run_without_one(
    world: CheckWorld, tmp_path: Path
) -> None:
    """A quoted program path with a space is one word (`.split()` cut it in two), the form of
    `[monitor] alert_command`; the command line's replaces the configured one."""
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1, "mx9.example.test"])  # a new finding
    folder = tmp_path / "with space"
    folder.mkdir()
    recorder, alerts = folder / "rec.py", folder / "alerts $HOME.txt"
    recorder.write_text(RECORDER)
    configured = [sys.executable, "-c", "raise SystemExit(1)"]
    config = _own_config(tmp_path, D, command=configured)
    command = shlex.join([sys.executable, str(recorder), str(alerts)])

    def call() -> int:
        return main(["monitor", "--once", "-c", str(config), "--state-file",
                     str(tmp_path / "state.json"), "--alert-command", command,
                     *world.base_args()])  # fmt: skip

    assert await asyncio.to_thread(call) == 2
    [delivered] = [json.loads(a) for a in alerts.read_text().split("\n===\n") if a.strip()]
    assert "MX_NOT_COVERED" in {t["code"] for t in delivered}
    assert json.loads((tmp_path / "state.json").read_text())["unsent_by_channel"] == {}


def test_an_alert_command_with_an_unclosed_quote_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _own_config(tmp_path, D)
    argv = ["monitor", "--once", "-c", str(config), "--alert-command", "'/usr/bin/page me"]
    assert main(argv) == 64
    assert "--alert-command" in capsys.readouterr().err


async def test_names_that_are_no_domains_do_not_stop_the_others_being_monitored(
    world: CheckWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`monitor --domain A --domain 'bad name'`: A is monitored (once, its state kept), the bad
    name is named on stderr after the pass, never alerted, and makes the exit at least UNKNOWN
    (3), as in `check`; a critical domain still wins (2). `[[own_domains]]` the same."""
    await world.mx_server(MX1)
    world.publish(D, enforce_policy(MX1), mx=[MX1])
    recorder, alerts, state = tmp_path / "rec.py", tmp_path / "alerts.txt", tmp_path / "s.json"
    recorder.write_text(RECORDER)
    own = _own_config(
        tmp_path, D, "[mx.example.test]", command=[sys.executable, str(recorder), str(alerts)]
    )

    def call(*names: str) -> int:
        domains = [word for name in names for word in ("--domain", name)]
        return main(["monitor", "--once", "-c", str(own), "--state-file", str(state),
                     *domains, *world.base_args()])  # fmt: skip

    capsys.readouterr()
    assert await asyncio.to_thread(call, D, "bad name", D) == 3
    out, err = capsys.readouterr()
    assert out == f"{D}: OK (no findings)\n"
    assert err.count("not monitored") == 1
    assert "monitor: 'bad name' is not a domain name: not monitored\n" in err
    assert list(json.loads(state.read_text())["domains"]) == [D]
    assert await asyncio.to_thread(call) == 3  # the configured names: the same rule
    out, err = capsys.readouterr()
    assert out == f"{D}: OK (no findings)\n"
    assert "monitor: '[mx.example.test]' is not a domain name: not monitored\n" in err
    assert not alerts.exists()  # a name that is not a domain has no state to alert on

    world.dns.set_mx(D, (10, MX1), (20, "mx3.example.test"))  # drift: critical
    assert await asyncio.to_thread(call, "a..b", D) == 2
    [delivered] = [json.loads(a) for a in alerts.read_text().split("\n===\n") if a.strip()]
    assert {t["domain"] for t in delivered} == {D}
    assert "'a..b' is not a domain name: not monitored" in capsys.readouterr().err


def test_monitor_targets_are_each_domain_once_with_its_expectations() -> None:
    """The rule of `check` (tools/check/names.py): A-labels, each once, in order; the other
    names said, not raised; `[[own_domains]]` expectations stay with their own domain."""
    from mta_sts_policyd.config.settings import config_from_mapping
    from mta_sts_policyd.service.own_domains import monitor_targets

    config = config_from_mapping(
        {
            "own_domains": [
                {"domain": "[mx.example.test]", "expect_id": "x1"},
                {"domain": "Example.TEST", "expect_id": "abc"},
                {"domain": "other.test", "expect_cname": ["h.example"]},
            ]
        }
    )
    targets, not_domains = monitor_targets(config)
    assert [(t.domain, t.options.expect_id, t.options.expect_cname) for t in targets] == [
        ("example.test", "abc", ()),
        ("other.test", None, ("h.example",)),
    ]
    assert not_domains == ["'[mx.example.test]' is not a domain name"]
    targets, not_domains = monitor_targets(config, ["a.test", "bad name", "A.test."])
    assert [t.domain for t in targets] == ["a.test"]
    assert not_domains == ["'bad name' is not a domain name"]
