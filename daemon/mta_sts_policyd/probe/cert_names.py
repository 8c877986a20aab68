"""Certificate DNS-IDs against a host name by RFC 8461 §4.2 / RFC 6125 rules (pure).

SAN dNSName entries only, never the subject CN; a wildcard only as the whole left-most label,
covering exactly one label. Shared by the MX probe and `check` (policy host and MX hosts).
"""

from __future__ import annotations


def _name_matches(reference: str, host: str) -> bool:
    """One DNS-ID against the host (both lower case, no trailing dot)."""
    reference = reference.rstrip(".")
    if not reference.startswith("*."):
        return "*" not in reference and reference == host
    suffix = reference[2:]
    if "*" in suffix or "." not in suffix:
        return False  # partial or nested wildcards and `*.tld` never match
    label, dot, rest = host.partition(".")
    return bool(label) and bool(dot) and rest == suffix


def matches_host(dns_names: tuple[str, ...], host: str) -> bool:
    """RFC 8461 §4.2 / RFC 6125: some SAN DNS-ID names `host`; the CN is never consulted."""
    host = host.rstrip(".").lower()
    return any(_name_matches(name, host) for name in dns_names)
