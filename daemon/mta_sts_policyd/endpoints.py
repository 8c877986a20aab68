"""Text forms of network endpoints that configuration and the network code both read.

A shared leaf (pure, like errors.py): config/ checks the values when the file is loaded and
net/ turns the same text into sockets, so both must read it with the same function, or a value
the check accepted could still be refused at start-up (or the reverse).
"""

from __future__ import annotations

import ipaddress

from mta_sts_policyd.errors import ConfigError

DNS_PORT = 53
SMTP_PORT = 25
INET_PREFIX = "inet:"
"""Postfix's map-client prefix (`socketmap:inet:127.0.0.1:8463:postfix`): no part of an address."""


def parse_nameserver(text: str, key: str = "discovery.nameservers") -> tuple[str, int]:
    """`IP`, `IP:PORT`, `IPv6`, `[IPv6]` or `[IPv6]:PORT` -> (address, port); port 53 by default.

    A bare IPv6 address has no port (its colons would be ambiguous); write `[IPv6]:PORT` for
    one. Names are refused: the resolver that would look them up is the one being configured.
    The address comes back in its canonical text form. ConfigError names `key` and the problem.
    """
    host, port, _ = split_host_port(text, key, DNS_PORT)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ConfigError(
            f"{key}: {text!r}: {host!r} is not an IP address"
            " (expected IP, IP:PORT, IPv6, [IPv6] or [IPv6]:PORT; no host names)"
        ) from None
    return address, _port_number(port, text, key)


def nameserver_warning(text: str, key: str) -> str | None:
    """What may be wrong with a nameserver `parse_nameserver` takes, naming `key`; None if
    nothing. An IPv6 address outside brackets has no port, so `::1:5353` is the address
    ::1:5353 on port 53, though it reads as port 5353 on ::1: a resolver that does not
    exist, found only when discovery fails. Said (not refused), since both are addresses
    that may be meant; `[ADDRESS]` says which and silences it."""
    spec = text.strip()
    reading = None if spec.startswith("[") or not _is_ipv6(spec) else _port_reading(spec)
    if reading is None:
        return None
    host, port = reading
    address = str(ipaddress.IPv6Address(spec))
    return (
        f"{key}: {text!r} is the address {address} on port {DNS_PORT} (an IPv6 address outside"
        f" brackets has no port); for port {port} on {host} write [{host}]:{port}, or write"
        f" [{address}] to keep this reading"
    )


def parse_smtp_relay(text: str, key: str) -> tuple[str, int]:
    """`HOST`, `HOST:PORT`, `[IPv6]` or `[IPv6]:PORT` of the relay mail is handed to -> (host,
    port); port 25 by default. ConfigError names `key` and the problem."""
    host, port, bracketed = split_host_port(text, key, SMTP_PORT)
    if bracketed:
        if ":" not in host:
            raise ConfigError(f"{key}: {text!r}: expected [IPv6] or [IPv6]:PORT")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ConfigError(f"{key}: {text!r}: {host!r} is not an IPv6 address") from None
    elif not host or any(c.isspace() or c in "[]/:" for c in host):
        raise ConfigError(f"{key}: {text!r}: expected HOST, HOST:PORT or [IPv6]:PORT")
    return host, _port_number(port, text, key)


def parse_listen_address(text: str, key: str) -> tuple[str, int]:
    """`HOST:PORT` / `[V6]:PORT` -> (host, port); `unix:/path` -> ("unix", 0) with the path.

    Every listen-type key (`server.listen`, `metrics.listen`, `[host]` listeners, the Redis
    sentinels) and the `--listen`/`--socketmap` arguments are read here. Port 0 is refused like
    any port outside 1-65535: the kernel would bind a random port that no client is told of.
    Postfix's map prefix `inet:` is refused here, saying to drop it (the command line drops it
    before, see `without_inet_prefix`).
    """
    if text.startswith("unix:"):
        if not text[5:].startswith("/"):
            raise ConfigError(f"{key}: expected unix:/absolute/path, got {text!r}")
        return "unix", 0
    if text.startswith(INET_PREFIX):
        raise ConfigError(
            f"{key}: {text!r}: drop {INET_PREFIX!r}, Postfix's map syntax"
            f" (write {text[len(INET_PREFIX) :]!r})"
        )
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    unbracketed = ":" in host and not bracketed  # an IPv6 address's colons read as a port's
    if unbracketed and (meant := _bracketed(text)):
        raise ConfigError(f"{key}: {text!r}: an IPv6 address goes in brackets: {meant}")
    if unbracketed or not sep or not host or not (port.isascii() and port.isdigit()):
        raise ConfigError(f"{key}: expected HOST:PORT, [IPv6]:PORT or unix:/path, got {text!r}")
    return host, _port_number(port, text, key)


def without_inet_prefix(text: str) -> str:
    """`text` without a leading `inet:`, so an address pasted from main.cf's
    `socketmap:inet:HOST:PORT:name` works on the command line."""
    return text[len(INET_PREFIX) :] if text.startswith(INET_PREFIX) else text


def _bracketed(text: str) -> str:
    """The bracketed spellings an unbracketed IPv6 `text` may have meant, from what was
    written: the whole text as the address (its port still to add), and, when the part after
    the last colon can be a port, the rest as the address with that port. Both are offered
    when both read (`::1:9463`): which one was meant cannot be known. "" when neither is an
    IPv6 address (`a:b:c`)."""
    meanings = []
    if reading := _port_reading(text):
        host, port = reading
        meanings.append(f"[{host}]:{port} for port {port} on {host}")
    if _is_ipv6(text):
        meanings.append(f"[{text}]:PORT for the address {text}")
    return "write " + ", or ".join(meanings) if meanings else ""


def _port_reading(text: str) -> tuple[str, str] | None:
    """(IPv6 address, port) when `text` also reads as an IPv6 address followed by `:PORT`
    (`::1:9463`: port 9463 on ::1); None when the part before the last colon is no IPv6
    address or the part after it cannot be a port."""
    host, _, port = text.rpartition(":")
    if _is_ipv6(host) and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
        return host, port
    return None


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def split_host_port(text: str, key: str, default: int) -> tuple[str, str, bool]:
    """(host, port text, whether the host was in brackets) of `HOST`, `HOST:PORT`, `[IPv6]`
    or `[IPv6]:PORT`; a bare IPv6 address (more than one colon) is all host. The port text is
    not checked here (str(`default`) when none is written); ConfigError for a bad bracket."""
    spec = text.strip()
    host, port = spec, str(default)
    bracketed = spec.startswith("[")
    if bracketed:
        host, closed, rest = spec[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ConfigError(f"{key}: {text!r}: expected [IPv6] or [IPv6]:PORT")
        port = rest[1:] if rest else port
    elif spec.count(":") == 1:
        host, _, port = spec.partition(":")
    return host, port, bracketed


def _port_number(port: str, text: str, key: str) -> int:
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"{key}: {text!r}: port {port!r}: expected a number from 1 to 65535")
    return int(port)
