"""Listening ports for the servers and daemons the tests start.

A port the kernel picks with bind(0) comes from the ephemeral range, the same range it draws
the local ports of outgoing connections from: between the probe and the server's own bind, a
Redis client or an HTTPS fetch elsewhere in the run may take it ("Address already in use").
Ports below the ephemeral range are never handed out implicitly, so only another listener can
hold one; each port is checked by binding it on every address and handed out once per run.
"""

from __future__ import annotations

import contextlib
import functools
import random
import socket
from collections.abc import Sequence
from pathlib import Path

LOWEST = 20000
"""Below this lie registered ports of services a test machine may run."""

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def free_port(hosts: Sequence[str] = ("127.0.0.1",)) -> int:
    """A TCP port free on every address in `hosts`, outside the ephemeral range."""
    highest = _ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(LOWEST, highest)
        if port in _handed_out or not _bindable(port, hosts):
            continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port in {LOWEST}-{highest} on {', '.join(hosts)}")


@functools.cache
def ipv6_loopback() -> bool:
    """Whether `::1` can be bound here (some containers have no IPv6 on loopback)."""
    return _bindable(0, ("::1",))


@functools.cache
def _ephemeral_low() -> int:
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, LOWEST + 1000)


def _bindable(port: int, hosts: Sequence[str]) -> bool:
    try:
        with contextlib.ExitStack() as stack:
            for host in hosts:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
                sock.bind((host, port))
    except OSError:
        return False
    return True
