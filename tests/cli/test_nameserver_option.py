"""`--nameserver` on the command line is read by the rule of `discovery.nameservers` and warned
about as that key is: `::1:5353` is the address ::1:5353 on port 53, seldom what was meant.

The warning comes from the one argparse type every command's `--nameserver` uses, so the
commands run here stop before asking any DNS server (no domain, no policy): nothing leaves
the machine.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta_sts_policyd.cli import main as cli
from mta_sts_policyd.cli.arguments import nameserver

WARNING = (
    "warning: --nameserver: '::1:5353' is the address ::1:5353 on port 53 (an IPv6 address"
    " outside brackets has no port); for port 5353 on ::1 write [::1]:5353, or write"
    " [::1:5353] to keep this reading\n"
)


def _nameserver_options() -> dict[str, argparse.Action]:
    """Every subcommand (and sub-subcommand) with a `--nameserver`, by its name."""
    found: dict[str, argparse.Action] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if "--nameserver" in action.option_strings:
                found[name] = action
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}".strip())

    walk(cli.build_parser(), "")
    return found


def test_every_nameserver_option_is_read_by_the_one_type() -> None:
    """One place warns for every command: each `--nameserver` has the same argparse type."""
    options = _nameserver_options()
    assert sorted(options) == ["check", "generate", "host", "monitor", "publish"]
    assert all(action.type is nameserver for action in options.values())


@pytest.fixture(autouse=True)
def _own_log_handlers() -> Iterator[None]:
    """`monitor` and `host` set up logging on this test's stderr: later tests must not write
    to that closed stream, so the handlers added here go when the test ends."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


@pytest.fixture
def config(tmp_path: Path) -> str:
    (tmp_path / "policies").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[cache]\nstate_dir = "{tmp_path}/state"\n'
        f'[host]\nstate_dir = "{tmp_path}/host"\npolicy_dir = "{tmp_path}/policies"\n'
    )
    return str(path)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["check", "a..b"], "check: 'a..b' is not a domain name\ncheck: no domain given\n"),
        (["monitor", "--once"], "monitor: no domain"),
        (["host", "status"], "host status: no policies in"),
    ],
    ids=["check", "monitor", "host status"],
)
def test_an_ipv6_nameserver_with_a_port_like_last_group_is_warned_about(
    capsys: pytest.CaptureFixture[str], config: str, argv: list[str], said: str
) -> None:
    """The warning on stderr names the option, the reading taken and both bracketed forms, as
    `check-config` does for the key; it stops nothing (the command goes on to its own end)."""
    assert cli.main([*argv, "-c", config, "--nameserver", "::1:5353"]) == 3
    err = capsys.readouterr().err
    assert err.startswith(WARNING)
    assert said in err.removeprefix(WARNING)
    assert err.count("warning:") == 1


@pytest.mark.parametrize("spec", ["[::1]:5353", "[::1:5353]", "::1", "127.0.0.1:5353"])
def test_nameservers_that_say_what_they_mean_are_not_warned_about(
    capsys: pytest.CaptureFixture[str], config: str, spec: str
) -> None:
    assert cli.main(["check", "-c", config, "--nameserver", spec, "a..b"]) == 3
    assert "warning" not in capsys.readouterr().err
