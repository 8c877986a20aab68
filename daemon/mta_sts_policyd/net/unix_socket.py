"""The collector's socket file: bind with mode and group, replace a stale one, never steal one.

Permissions are set right after bind, before the receiver starts reading; a socket file with a
live listener (another collector) is refused rather than replaced.
"""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
from pathlib import Path

from mta_sts_policyd.errors import ConfigError

log = logging.getLogger("mta_sts_policyd.tlsrpt.libtlsrpt.collector")


def bind_datagram_socket(
    path: Path, mode: int, group: str | int | None, rcvbuf: int
) -> socket.socket:
    try:  # systemd's RuntimeDirectory= makes it; without systemd the daemon does
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"tlsrpt socket {path}: cannot create its directory: {exc}") from exc
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(str(path))
        os.chmod(path, mode)
        if group is not None:
            gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
    except (OSError, KeyError) as exc:
        sock.close()
        unlink_socket(path)
        raise ConfigError(f"tlsrpt socket {path}: {exc}") from exc
    return sock


def remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"tlsrpt socket {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise ConfigError(f"tlsrpt socket {path} is in use by another process")


def unlink_socket(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("tlsrpt socket %s not removed: %s", path, exc)
