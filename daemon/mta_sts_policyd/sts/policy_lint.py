"""What a policy body does that senders tolerate but an operator should hear about (pure).

The parser (policy.py) accepts these on purpose (refusing a benign variant would silently turn
a domain into "no MTA-STS"); `check` reports them. Only call this on a body that
`parse_policy` accepted: it reuses the parser's own line splitting.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mta_sts_policyd.sts.model import MAX_AGE_LIMIT
from mta_sts_policyd.sts.policy import _BOM, _decode, _fields

_KNOWN = frozenset({"version", "mode", "max_age", "mx"})


class LintKind(StrEnum):
    BOM = "bom"
    MIXED_LINE_ENDINGS = "mixed-line-endings"
    DUPLICATE_KEY = "duplicate-key"
    UNKNOWN_KEY = "unknown-key"
    MAX_AGE_ABOVE_LIMIT = "max-age-above-limit"


@dataclass(frozen=True, slots=True)
class LintNote:
    kind: LintKind
    line: int
    detail: str


def lint_policy(body: bytes) -> list[LintNote]:
    notes: list[LintNote] = []
    if body.startswith(_BOM):
        notes.append(LintNote(LintKind.BOM, 1, "the body starts with a UTF-8 byte-order mark"))
    crlf, lf = body.count(b"\r\n"), body.count(b"\n")
    if 0 < crlf < lf:
        detail = f"{crlf} CRLF and {lf - crlf} LF-only line ends"
        notes.append(LintNote(LintKind.MIXED_LINE_ENDINGS, 0, detail))
    seen: dict[str, int] = {}
    for field in _fields(_decode(body)):
        if field.key in seen and field.key != "mx":
            detail = f"'{field.key}' repeats line {seen[field.key]}; ignored"
            notes.append(LintNote(LintKind.DUPLICATE_KEY, field.line, detail))
            continue
        seen.setdefault(field.key, field.line)
        if field.key not in _KNOWN:
            notes.append(LintNote(LintKind.UNKNOWN_KEY, field.line, f"unknown key '{field.key}'"))
        elif field.key == "max_age" and field.value.isdigit() and int(field.value) > MAX_AGE_LIMIT:
            detail = f"max_age {field.value} > {MAX_AGE_LIMIT}; senders clamp it"
            notes.append(LintNote(LintKind.MAX_AGE_ABOVE_LIMIT, field.line, detail))
    return notes
