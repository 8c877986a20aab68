"""systemd protocols without libsystemd: readiness notification and socket activation.

`Type=notify` / `Type=notify-reload` units read the sd_notify(3) datagrams; without
NOTIFY_SOCKET (not started by systemd) every call is a cheap no-op, so callers never check.
"""

from __future__ import annotations

import os
import socket
import time

SD_LISTEN_FDS_START = 3


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "STATUS=...") to $NOTIFY_SOCKET; True if sent.

    A leading `@` names an abstract socket (Linux). Errors are swallowed: a lost status
    message must never stop the daemon.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


def ready(status: str | None = None) -> bool:
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def reloading() -> bool:
    """`Type=notify-reload` needs MONOTONIC_USEC with RELOADING=1 (sd_notify(3))."""
    return notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def systemd_listen_sockets() -> list[socket.socket]:
    """Sockets passed by systemd socket activation (sd_listen_fds(3)), fds from 3 on.

    The LISTEN_* variables are removed so child processes do not adopt the sockets too.
    """
    pid = os.environ.pop("LISTEN_PID", "")
    count = os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if not (pid.isdigit() and count.isdigit()) or int(pid) != os.getpid():
        return []
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        socks.append(socket.socket(fileno=fd))
    return socks
