"""Man pages and bash completion generated from the argparse definitions and the config classes.

`python -m mta_sts_policyd.cli.manpage [ROOT]` (ROOT: the source tree, default `.`) writes
`man/mta-sts-policyd.8`, `man/mta-sts-policyd.toml.5` and
`contrib/bash-completion/mta-sts-policyd`; a test regenerates them and fails when the
checked-in files differ, so the pages never drift from `--help` or the config. Key descriptions
come from the attribute docstrings in the config classes, else from the comments of the sample
configuration (postfix-examples/config.toml).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.main import DESCRIPTION, build_parser
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.config.toml_schema import toml_value

DATE = "2026-12"
SOURCE = "mta-sts-policyd"
EXIT_MEANINGS = {
    ExitCode.OK: "found / ok: an enforce policy applies, or the command did what was asked",
    ExitCode.NOT_FOUND: "no policy (none, testing, none mode, invalid), nothing stored, "
    "no data yet, TLS reporting off, a failed probe",
    ExitCode.USAGE: "usage error; a file named on the command line cannot be read",
    ExitCode.UNAVAILABLE: "serve: another serve holds the state directory",
    ExitCode.CANT_CREATE: (
        "the state directory or a store in it cannot be used, or an output file named on the"
        " command line cannot be written"
    ),
    ExitCode.TEMPFAIL: (
        "temporary failure: could not find out now (DNS, HTTPS, daemon down; the reports-in"
        " intake: its store, so that the pipe retries)"
    ),
    ExitCode.CONFIG: "configuration error; every bad key is listed",
    ExitCode.INTERRUPTED: "interrupted",
    ExitCode.PIPE_CLOSED: "the reader closed the pipe",
}


def roff(text: str) -> str:
    """Escape for roff: backslashes, leading dots and quotes, hyphens in options."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, Any]]:
    """(full name, help, parser) of every subcommand that runs something (a leaf, or one with
    its own handler besides its subcommands, as `reports-in`), depth first, in definition
    order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                nested = list(_subcommands(sub))
                if not nested or sub.get_default("handler") is not None:
                    yield name, helps.get(name, ""), sub
                yield from ((f"{name} {n}", h, p) for n, h, p in nested)


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            yield action


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest).upper()
    flags = ", ".join(action.option_strings)
    takes_value = action.nargs != 0
    return f"{flags} {str(action.metavar or action.dest).upper()}" if takes_value else flags


def page8() -> str:
    parser = build_parser()
    out = [
        f'.TH MTA-STS-POLICYD 8 "{DATE}" "{SOURCE}" "System Administration"',
        ".SH NAME",
        "mta\\-sts\\-policyd \\- " + roff(DESCRIPTION.split(":")[0]),
        ".SH SYNOPSIS",
        ".B mta\\-sts\\-policyd",
        ".I command",
        "[\\fIoptions\\fR]",
        ".SH DESCRIPTION",
        roff(DESCRIPTION),
        "Postfix: \\fBsmtp_tls_policy_maps = socketmap:inet:127.0.0.1:8463:postfix\\fR.",
        ".SH COMMANDS",
    ]
    for name, help_text, sub in _subcommands(parser):
        out += [".SS " + roff(name), roff(help_text) if help_text else ""]
        for action in _options(sub):
            out += [".TP", "\\fB" + roff(_invocation(action)) + "\\fR", roff(action.help or "")]
    out += [".SH EXIT STATUS", "The same answer gives the same code from every command."]
    for code, meaning in EXIT_MEANINGS.items():
        out += [".TP", f"\\fB{int(code)}\\fR", roff(meaning)]
    out += [
        ".SH FILES",
        ".TP",
        "/etc/mta\\-sts\\-policyd/config.toml",
        "configuration (optional); see \\fBmta\\-sts\\-policyd.toml\\fR(5)",
        ".TP",
        "/var/lib/mta\\-sts\\-policyd/",
        "state: policies.sqlite, tlsrpt.sqlite, control.sock",
        ".SH SEE ALSO",
        "\\fBmta\\-sts\\-policyd.toml\\fR(5), \\fBpostconf\\fR(5), \\fBsystemd.service\\fR(5), "
        "RFC 8461, RFC 8460",
    ]
    return "\n".join(line for line in out if line != "") + "\n"


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string right after a field) from the class source."""
    tree = ast.parse(inspect.getsource(cls).lstrip())
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        field = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if field and doc:
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


SAMPLE = Path(__file__).resolve().parents[3] / "postfix-examples" / "config.toml"


def sample_comments(text: str) -> dict[str, str]:
    """`table.key` -> the comment lines right above `key = ...` in the sample configuration."""
    docs: dict[str, str] = {}
    table, comments = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
        elif line.startswith("["):
            table, comments = line.strip("[]"), []
        elif "=" in line:
            key = line.split("=", 1)[0].strip()
            if comments:
                docs[f"{table}.{key}"] = " ".join(comments)
            comments = []
        else:
            comments = []
    return docs


def _tables(cls: type, prefix: str) -> Iterator[tuple[str, type, Any]]:
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(value):
            yield from _tables(type(value), f"{prefix}.{f.name}" if prefix else f.name)
        else:
            yield prefix, cls, f


def page5() -> str:
    out = [
        f'.TH MTA-STS-POLICYD.TOML 5 "{DATE}" "{SOURCE}" "File Formats"',
        ".SH NAME",
        "mta\\-sts\\-policyd.toml \\- configuration of mta\\-sts\\-policyd",
        ".SH DESCRIPTION",
        "/etc/mta\\-sts\\-policyd/config.toml (or \\fB\\-c FILE\\fR) is TOML. Every key has a "
        "default, so an empty or absent file runs. An unknown key or a bad value is an error "
        "naming the key; \\fBmta\\-sts\\-policyd check\\-config\\fR lists every one and prints "
        "the effective configuration. SIGHUP re\\-reads the file.",
    ]
    table = None
    sample = sample_comments(SAMPLE.read_text()) if SAMPLE.is_file() else {}
    for prefix, cls, f in _tables(Config, ""):
        if prefix != table:
            table = prefix
            out += [".SH " + ("[" + roff(prefix) + "]" if prefix else "TOP\\-LEVEL KEYS")]
            if prefix and cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
                out.append(roff(" ".join(cls.__doc__.split())))
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out += [".TP", "\\fB" + roff(f.name) + "\\fR = " + roff(toml_value(_plain(value)))]
        doc = _field_docs(cls).get(f.name) or sample.get(f"{prefix}.{f.name}", "")
        out.append(roff(doc) or "(no description)")
    out += [".SH SEE ALSO", "\\fBmta\\-sts\\-policyd\\fR(8)"]
    return "\n".join(out) + "\n"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def completion() -> str:
    """A bash completion script: subcommands, then the options of the chosen one."""
    parser = build_parser()
    words: dict[str, list[str]] = {"": []}
    for name, _help, sub in _subcommands(parser):
        first, _, second = name.partition(" ")
        words[""].append(first) if first not in words[""] else None
        if second:
            words.setdefault(first, []).append(second)
        options = [o for a in _options(sub) for o in a.option_strings]
        words[name] = [*options, "--help"]
    words[""].append("--version")
    cases = "\n".join(f'        "{key}") words="{" ".join(value)}" ;;'
                      for key, value in words.items())  # fmt: skip
    return f"""# bash completion for mta-sts-policyd (generated by mta_sts_policyd.cli.manpage)
_mta_sts_policyd() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} path="" word words i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        [[ $word == -* ]] && continue
        if [[ -z $path ]]; then path=$word; elif [[ $path != *" "* ]]; then path="$path $word"; fi
    done
    case "$path" in
{cases}
        *) words="" ;;
    esac
    case "${{COMP_WORDS[COMP_CWORD-1]}}" in
        -c|--config|--outbox) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --state-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F _mta_sts_policyd mta-sts-policyd
"""


FILES = {
    "man/mta-sts-policyd.8": page8,
    "man/mta-sts-policyd.toml.5": page5,
    "contrib/bash-completion/mta-sts-policyd": completion,
}


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else ".")
    for name, render in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(render())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
