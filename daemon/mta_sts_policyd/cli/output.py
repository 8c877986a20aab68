"""How every subcommand writes: one JSON printer, one error path, human times.

`--json` output, including errors, is always one JSON document on stdout, so a script never
has to parse prose; human output never shows Python reprs (`None`, dicts) or epoch floats.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

Code = TypeVar("Code", bound=int)


def print_json(data: Any, out: TextIO | None = None) -> None:
    """The JSON printer of every `--json` path (sorted keys, stable for diffs and tests)."""
    stream = out or sys.stdout
    stream.write(json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False))
    stream.write("\n")


def fail(command: str, message: str, code: Code, *, as_json: bool = False) -> Code:
    """Report an expected failure: JSON on stdout with `--json`, else one line on stderr
    (several lines joined by newlines: one problem each). `code` is an ExitCode, or a
    NagiosStatus for the monitoring plugins."""
    if as_json:
        print_json({"ok": False, "error": message, "exit_code": int(code)})
    else:
        for line in message.splitlines():
            print(f"{command}: {line}", file=sys.stderr)
    return code


def iso_time(epoch: float | None) -> str:
    """ISO 8601 UTC to the second (`2026-12-02T04:37:06Z`); `-` for never/unset (0 or None)."""
    if not epoch:
        return "-"
    moment = datetime.fromtimestamp(epoch, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def relative(epoch: float | None, now: float) -> str:
    """`in 3h12m` / `5m ago`, for columns where the distance matters more than the date."""
    if not epoch:
        return "-"
    delta = epoch - now
    text = duration(abs(delta))
    return f"in {text}" if delta > 0 else f"{text} ago"


def duration(seconds: float) -> str:
    """`2d3h`, `3h12m`, `4m10s`, `9s`: the two largest units."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def plain(value: Any) -> str:
    """A value for a human: lists joined, booleans as yes/no, nothing as `-`."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value) if value else "-"
    return str(value)


def escaped(text: str) -> str:
    """Text from outside (Redis, the network) for one terminal line: whitespace, backslashes
    and every character that does not print become backslash escapes (`\\n`, `\\x20`,
    `\\\\`), so a name holding a line break or a space cannot split a table row or fake one."""
    return "".join(c if c.isprintable() and c not in " \\" else _escape(c) for c in text)


def _escape(char: str) -> str:
    return "\\x20" if char == " " else char.encode("unicode_escape").decode("ascii")
