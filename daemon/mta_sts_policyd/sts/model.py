"""Value types of RFC 8461 shared by the parser, the cache and the reply renderer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_AGE_LIMIT = 31_557_600
"""RFC 8461 §3.2: the largest max_age a sender honours; larger ABNF-valid values are clamped."""


class Mode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy file.

    `lines` are the fields of the effective policy in their original order, normalised to
    `key: value` (the RFC 8460 `policy-string` and Postfix's `{ policy_string = ... }` need
    them): every `mx` and the first occurrence of every other key, values as written.
    Ignored duplicates are left out; well-formed extensions are kept, and postfix.py drops
    any line it cannot render safely (docs/conformance.md: PF-reply-syntax).
    """

    mode: Mode
    max_age: int
    """Cache lifetime in seconds, already clamped to MAX_AGE_LIMIT."""
    mx: tuple[str, ...]
    """MX patterns, lower-case A-labels, `*.` kept; in file order."""
    lines: tuple[str, ...]
    version: str = "STSv1"


@dataclass(frozen=True, slots=True)
class TxtRecord:
    """The one valid `_mta-sts` TXT record of a domain (RFC 8461 §3.1)."""

    id: str
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TxtAbsent:
    """No STS candidate record is published: "no policy"."""

    reason: str = "no v=STSv1 TXT record"


@dataclass(frozen=True, slots=True)
class TxtInvalid:
    """Candidates exist but not exactly one valid record: "no live policy" (RFC 8461 §3.1)."""

    reason: str


TxtResult = TxtRecord | TxtAbsent | TxtInvalid
