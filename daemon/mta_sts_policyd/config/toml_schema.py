"""TOML <-> frozen dataclasses: the generic half of configuration handling.

stdlib tomllib reads; this checks every value against the dataclass field types (unknown keys
and wrong types are errors naming the dotted key) and writes TOML back (stdlib has no writer).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from mta_sts_policyd.errors import ConfigError

Checks = Mapping[str, Callable[[Any], str | None]]


_SINGULAR = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURAL = {bool: "true or false values", int: "integers", float: "numbers", str: "strings"}


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(toml_value(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        item = get_args(tp)[0]
        if dataclasses.is_dataclass(item):
            return "an array of tables (a [[...]] block per entry)"
        return f"a list of {_PLURAL.get(item) or _describe(item)}"
    return _SINGULAR.get(tp, str(tp))


def _convert(
    path: str, tp: Any, value: Any, checks: Checks, problems: list[str] | None = None
) -> Any:
    """Check one TOML value against the dataclass field type; return the typed value. With
    `problems`, a table's bad keys are collected there and keep their defaults, so the rest of
    the table (and the checks across tables) still see what the file says."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table [{path}]")
        return build_dataclass(tp, value, path, checks=checks, problems=problems)
    if origin is Literal:
        for allowed in get_args(tp):
            if value == allowed and type(value) is type(allowed):
                return value
            same_word = isinstance(value, str) and isinstance(allowed, str)
            if same_word and value.casefold() == str(allowed).casefold():
                return allowed  # `level = "info"` means INFO: one spelling kept inside
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {_shown(value)}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected {_describe(tp)}, got {_shown(value)}")
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_convert(f"{path}[{i}]", get_args(tp)[0], item, checks, problems))
            except ConfigError as exc:
                if problems is None:
                    raise
                problems.extend(exc.problems)  # the other entries are still checked
        return tuple(items)
    if origin in (Union, types.UnionType):
        raise ConfigError(f"{path}: unsupported type")  # pragma: no cover - no such fields
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {_shown(value)}")
    return value


def build_dataclass(
    cls: Any,
    data: Mapping[str, Any],
    prefix: str = "",
    *,
    checks: Checks | None = None,
    problems: list[str] | None = None,
) -> Any:
    """A (nested) frozen dataclass from TOML data: unknown keys, wrong types and values that
    fail `checks` (dotted key -> problem or None) are problems naming the key. With a
    `problems` list they are collected there (the bad keys keep their defaults) so every one
    is reported at once; without, the first raises ConfigError."""
    collect: list[str] = [] if problems is None else problems
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        try:
            kwargs[key] = _field(
                path, key in names and hints[key], value, checks or {}, names, problems
            )
        except ConfigError as exc:
            collect.extend(exc.problems)
            kwargs.pop(key, None)
    if problems is None and collect:
        raise ConfigError(*collect)
    return cls(**kwargs)


def _field(
    path: str,
    tp: Any,
    value: Any,
    checks: Checks,
    names: set[str],
    problems: list[str] | None = None,
) -> Any:
    if tp is False:
        known = ", ".join(sorted(names))
        raise ConfigError(f"{path}: unknown key (known keys here: {known})")
    typed = _convert(path, tp, value, checks, problems)
    check = checks.get(path)
    problem = check(typed) if check else None
    if problem:
        raise ConfigError(f"{path}: expected {problem}, got {_shown(value)}")
    return typed


def dataclass_as_dict(instance: Any) -> dict[str, Any]:
    """Plain data (tuples as lists) for JSON and TOML output."""
    plain: dict[str, Any] = _plain(dataclasses.asdict(instance))
    return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def tables_as_toml(tables: Mapping[str, Any]) -> str:
    """Top-level tables (nested dicts become dotted sub-tables) as TOML text."""
    lines: list[str] = []

    def emit(table: str, data: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
        lines.append(f"[{table}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in data.items():
            if isinstance(v, dict):
                emit(f"{table}.{k}", v)

    for name, section in tables.items():
        if isinstance(section, list):  # an array of tables: [[name]] per entry
            for entry in section:
                lines.append(f"[[{name}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in entry.items())
                lines.append("")
        else:
            emit(name, section)
    return "\n".join(lines)


def _shown(value: Any) -> str:
    """A refused value in a message: TOML's `true`/`false` as the file has them (Python's
    `True` reads like another spelling); anything else as before, quoted if text."""
    return toml_value(value) if isinstance(value, bool) else repr(value)


def toml_value(value: Any) -> str:
    """One TOML value (bool, number, string, list of those); tests write configs with it too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    """A TOML basic string; control characters must be escaped or the output does not parse."""
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c
        for c in text
    )
    return f'"{escaped}"'
