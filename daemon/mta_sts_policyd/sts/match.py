"""MX host name vs policy `mx` patterns (RFC 8461 §4.1)."""

from __future__ import annotations

from collections.abc import Iterable

from mta_sts_policyd.errors import InvalidName
from mta_sts_policyd.sts.names import host_name


def mx_matches(pattern: str, host: str) -> bool:
    """True when `host` satisfies `pattern` (`*.` covers exactly one extra label).

    RFC 8461 §4.1: ASCII case-insensitive, one trailing dot on the host ignored, compared as
    A-labels. Malformed input never raises; it simply does not match.
    """
    name = _normalise_host(host)
    return name is not None and _matches(pattern.lower(), name)


def patterns_matching(patterns: Iterable[str], host: str) -> list[str]:
    """The patterns (in order) that `host` satisfies."""
    name = _normalise_host(host)
    if name is None:
        return []
    return [pattern for pattern in patterns if _matches(pattern.lower(), name)]


def _normalise_host(host: str) -> str | None:
    """Lower-case A-label MX name without its trailing dot, or None if it is not a host name."""
    try:
        return host_name(host)
    except InvalidName:
        return None


def _matches(pattern: str, name: str) -> bool:
    if not pattern.startswith("*."):
        return pattern == name
    suffix = pattern[2:]
    if not suffix or "*" in suffix:
        return False
    _label, dot, rest = name.partition(".")
    return bool(dot) and rest == suffix
