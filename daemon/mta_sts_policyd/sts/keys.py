"""Postfix next-hop key -> MTA-STS policy domain (RFC 8461 §3.4; docs/conformance.md:
PF-key-forms)."""

from __future__ import annotations

import ipaddress
import re

from mta_sts_policyd.errors import InvalidName
from mta_sts_policyd.sts.names import hostname_problem, to_a_label

_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*", re.ASCII)
"""A port number or service name after the last ':' (`:587`, `:smtp`, `:submission`)."""

_BRACKETED = re.compile(r"\[([^\[\]]*)\](?::(.*))?", re.DOTALL)


def policy_domain_for_key(key: str) -> str | None:
    """Return the A-label policy domain for a Postfix lookup key, or None for "no lookup".

    None for `.parent` keys, IP literals, UNIX paths, empty or invalid names.
    `[host]`, `[host]:port`, `host:port`, trailing dot, upper case and U-labels are normalised.
    Single-label names (`localhost`, `[mailhub]`) give None as well: they are not public
    domains, and a `_mta-sts.<label>` query would only leak to the root servers.
    """
    host = _host_part(key)
    if host is None or _is_ip(host):
        return None
    host = host.removesuffix(".")
    try:
        domain = to_a_label(host)
    except InvalidName:
        return None
    if not host.isascii() and domain.endswith("."):
        domain = domain[:-1]  # a trailing ideographic full stop maps to "." (UTS 46)
    if hostname_problem(domain) is not None or "." not in domain:
        return None
    return domain


def domain_for_name(text: str) -> str | None:
    """A mail domain as a person writes it (an argument, a configuration value): its A-label
    policy domain, or None. Stricter than a Postfix key: no `[host]` or `:port` form."""
    if text.startswith("[") or ":" in text:
        return None
    return policy_domain_for_key(text)


def _host_part(key: str) -> str | None:
    """The key without brackets and port, or None when it cannot name a policy domain.

    A leading `.` is Postfix's own parent-domain retry (RFC 8461 §3.4): the RFC forbids applying a
    parent's policy, so it never reaches a lookup. A `/` means a UNIX socket path.
    """
    if not key or key.startswith(".") or "/" in key:
        return None
    if key.startswith("["):
        bracketed = _BRACKETED.fullmatch(key)
        if bracketed is None:
            return None
        host, service = bracketed.group(1), bracketed.group(2)
        if host.lower().startswith("ipv6:"):
            return None  # RFC 5321 IPv6 address literal
    elif key.count(":") == 1:
        host, _, service = key.partition(":")
    elif ":" in key:
        return None  # a bare IPv6 address or nonsense; never a domain
    else:
        host, service = key, None
    if service is not None and not _SERVICE.fullmatch(service):
        return None
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
