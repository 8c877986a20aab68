"""MX host name vs policy `mx` patterns (RFC 8461 §4.1, A50)."""

from __future__ import annotations

from collections.abc import Iterable


def mx_matches(pattern: str, host: str) -> bool:
    """True when `host` satisfies `pattern` (`*.` covers exactly one extra label)."""
    raise NotImplementedError


def patterns_matching(patterns: Iterable[str], host: str) -> list[str]:
    """The patterns (in order) that `host` satisfies."""
    raise NotImplementedError
