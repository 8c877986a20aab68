"""Man pages and bash completion are generated from the argparse definitions and the config
classes (cli/manpage.py); the checked-in files must be current, and groff must render the
pages without warnings. Regenerate: `python -m mta_sts_policyd.cli.manpage`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mta_sts_policyd.cli import manpage
from mta_sts_policyd.config.settings import Config, config_as_dict
from support import REPO_ROOT


@pytest.mark.parametrize("name", sorted(manpage.FILES))
def test_generated_files_are_current(name: str) -> None:
    assert (REPO_ROOT / name).read_text() == manpage.FILES[name](), (
        f"{name} is stale: run python -m mta_sts_policyd.cli.manpage"
    )


def test_every_exit_code_is_explained() -> None:
    from mta_sts_policyd.cli.exit_codes import ExitCode

    assert set(manpage.EXIT_MEANINGS) == set(ExitCode)


def test_every_command_and_config_key_is_in_the_pages() -> None:
    page8, page5 = manpage.page8(), manpage.page5()
    for command in ("serve", "query", "resolve", "cache list", "check\\-config", "report send"):
        assert f".SS {command}\n" in page8, command
    for table, keys in config_as_dict(Config()).items():
        if not isinstance(keys, dict):  # [[own_domains]]: a list of tables, empty by default
            continue
        for key, value in keys.items():
            if isinstance(value, dict):  # [tlsrpt.dkim]
                assert f".SH [{table}.{key}]" in page5
                continue
            assert "\\fB" + manpage.roff(key) + "\\fR = " in page5, f"{table}.{key}"


def test_every_table_and_key_says_what_it_is() -> None:
    """No key without a description, no section described by a dataclass's generated repr."""
    page5 = manpage.page5()
    assert "(no description)" not in page5
    assert "Config(" not in page5 and ".SH []" not in page5


@pytest.mark.parametrize("name", ["man/mta-sts-policyd.8", "man/mta-sts-policyd.toml.5"])
def test_groff_renders_without_warnings(name: str) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff not found: install Debian's groff-base (.ci/setup does)")
    done = subprocess.run([groff, "-man", "-ww", "-z", str(REPO_ROOT / name)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")


def complete(words: list[str], tmp_path: Path) -> list[str]:
    script = tmp_path / "run.sh"
    script.write_text(
        f"source {REPO_ROOT / 'contrib/bash-completion/mta-sts-policyd'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        '_mta_sts_policyd; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_offers_commands_then_their_options(tmp_path: Path) -> None:
    assert "check-config" in complete(["mta-sts-policyd", ""], tmp_path)
    assert complete(["mta-sts-policyd", "cache", ""], tmp_path) == [
        "list", "show", "purge", "refresh"
    ]  # fmt: skip
    assert "--json" in complete(["mta-sts-policyd", "cache", "show", "--"], tmp_path)
    assert complete(["mta-sts-policyd", "report", "send", "--out"], tmp_path) == ["--outbox"]
