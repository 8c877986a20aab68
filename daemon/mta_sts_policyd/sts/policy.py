"""Policy file parsing (RFC 8461 §3.2)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.sts.model import MAX_AGE_LIMIT, Mode, Policy
from mta_sts_policyd.sts.names import hostname_problem, show

_WSP = " \t"
_BOM = b"\xef\xbb\xbf"
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", re.ASCII)
_MAX_AGE = re.compile(r"[0-9]{1,10}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_KNOWN = ("version", "mode", "max_age", "mx")


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    value: str
    line: int

    def render(self) -> str:
        return f"{self.key}: {self.value}"


def parse_policy(body: bytes) -> Policy:
    """Parse and validate a policy body; raise PolicySyntaxError naming the line and reason.

    Strictness follows RFC 8461 §3.2: blank (or whitespace-only) lines, trailing whitespace, a
    missing final terminator and a leading UTF-8 BOM are tolerated, because refusing a benign
    variant silently turns the domain into "no MTA-STS"; everything the ABNF forbids in the
    fields we use is refused.

    `Policy.lines` holds the lines that make up the effective policy (RFC 8460 §4.5
    policy-string), in file order, as `key: value` with the value as written (trimmed of
    surrounding whitespace; `max_age` unclamped, `mx` not lower-cased): every `mx`, and the
    first occurrence of every other key, including extensions whose value is well-formed.
    Ignored duplicates are left out, as they are neither validated nor in effect.
    """
    effective: dict[str, _Field] = {}
    ordered: list[_Field] = []
    mx: list[str] = []
    for field in _fields(_decode(body)):
        if field.key == "mx":
            mx.append(_mx_pattern(field))
        elif field.key in effective:
            # RFC 8461 §3.2: only the first occurrence counts; later ones are not validated.
            continue
        else:
            effective[field.key] = field
        ordered.append(field)
    _version(_required(effective, "version"))
    mode = _mode(_required(effective, "mode"))
    max_age = _max_age(_required(effective, "max_age"))
    if mode is not Mode.NONE and not mx:
        raise PolicySyntaxError(
            f"mode {mode} needs at least one 'mx' line (only mode none may omit it)"
        )
    return Policy(
        mode=mode,
        max_age=min(max_age, MAX_AGE_LIMIT),
        mx=tuple(mx),
        lines=tuple(f.render() for f in ordered if f.key in _KNOWN or _extension_ok(f.value)),
    )


def _decode(body: bytes) -> str:
    """UTF-8 text of the body without a leading BOM (RFC 8461 §3.2)."""
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        raise PolicySyntaxError(
            f"the body is not valid UTF-8 (byte 0x{body[exc.start]:02x})", line
        ) from None


def _fields(text: str) -> Iterator[_Field]:
    """Split the text into `key: value` fields; LF or CRLF terminators (RFC 8461 §3.2, erratum
    6253)."""
    raw_lines = text.split("\n")
    for number, raw in enumerate(raw_lines, start=1):
        terminated = number < len(raw_lines)
        line = raw[:-1] if terminated and raw.endswith("\r") else raw
        if "\r" in line:
            raise PolicySyntaxError("bare CR; lines must end with LF or CRLF", number)
        if not line.strip(_WSP):
            continue  # blank lines are tolerated anywhere (RFC 8461 §3.2)
        if line[0] in _WSP:
            raise PolicySyntaxError("the line starts with whitespace", number)
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicySyntaxError(f"no ':' in {show(line)}; expected 'key: value'", number)
        if not _FIELD_NAME.fullmatch(key):
            raise PolicySyntaxError(
                f"{show(key)} is not a valid field name (a letter or digit, then up to 31"
                " letters, digits, '_', '.' or '-')",
                number,
            )
        yield _Field(key, value.strip(_WSP), number)


def _required(effective: dict[str, _Field], key: str) -> _Field:
    field = effective.get(key)
    if field is None:
        raise PolicySyntaxError(f"the required field '{key}' is missing (keys are case-sensitive)")
    return field


def _version(field: _Field) -> None:
    if field.value != "STSv1":
        raise PolicySyntaxError(f"version must be 'STSv1', not {show(field.value)}", field.line)


def _mode(field: _Field) -> Mode:
    try:
        return Mode(field.value)
    except ValueError:
        raise PolicySyntaxError(
            f"mode must be one of enforce, testing, none (case-sensitive), not {show(field.value)}",
            field.line,
        ) from None


def _max_age(field: _Field) -> int:
    if not _MAX_AGE.fullmatch(field.value):
        raise PolicySyntaxError(
            f"max_age must be 1 to 10 decimal digits, not {show(field.value)}", field.line
        )
    return int(field.value)


def _mx_pattern(field: _Field) -> str:
    """The lower-cased pattern: optional `*.` then an LDH host name (RFC 8461 §3.2)."""
    value = field.value
    problem = mx_pattern_problem(value)
    if problem is not None:
        raise PolicySyntaxError(f"mx {show(value)} is not a valid pattern: {problem}", field.line)
    return value.lower()


def mx_pattern_problem(value: str) -> str | None:
    """Why `value` is no `mx` pattern, or None: the parser's rule, also for patterns that are
    not in a file yet (`generate --mx`), whose error then names the pattern, not a line."""
    return hostname_problem(value[2:] if value.startswith("*.") else value)


def _extension_ok(value: str) -> bool:
    """An extension value is kept in `lines` only if the ABNF allows it (non-empty, no controls)."""
    return bool(value) and not _CONTROL.search(value)
