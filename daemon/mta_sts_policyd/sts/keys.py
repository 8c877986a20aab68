"""Postfix next-hop key -> MTA-STS policy domain (A1-A4, C.2.1, C.2.3)."""

from __future__ import annotations


def policy_domain_for_key(key: str) -> str | None:
    """Return the A-label policy domain for a Postfix lookup key, or None for "no lookup".

    None for `.parent` keys, IP literals, UNIX paths, empty or invalid names.
    `[host]`, `[host]:port`, `host:port`, trailing dot, upper case and U-labels are normalised.
    """
    raise NotImplementedError
