"""The one way a unix socket file is bound: the socketmap listener, the control socket and the
libtlsrpt collector all come through here.

Rules, the same for every socket: a file left by a dead process is replaced; a socket someone
still listens on is never taken over (a second daemon must fail, not silently steal the first
one's clients); any other file is left alone. Mode and group are set right after bind(), before
listen() or the first read, so no client ever meets the socket with looser permissions. On
shutdown only our own file is removed (a successor may already have bound the path).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from mta_sts_policyd.errors import ConfigError, SocketInUseError

log = logging.getLogger(__name__)

_NOBODY_LISTENS = (errno.ECONNREFUSED, errno.ENOENT)
"""connect() errors that prove the file is stale (EAGAIN would be a live but full socket)."""


@dataclass(frozen=True, slots=True)
class BoundUnixSocket:
    """A bound (not yet listening) unix socket and the file it owns."""

    sock: socket.socket
    path: Path
    inode: int

    def close(self) -> None:
        """Close the socket and remove its file (a start-up that failed after bind)."""
        self.sock.close()
        self.remove_file()

    def remove_file(self) -> None:
        """Unlink the socket file if it is still ours; never raises (shutdown path)."""
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("event=unix-socket-not-removed path=%s reason=%r", self.path, str(exc))


def bind_unix_socket(
    path: Path | str,
    kind: socket.SocketKind,
    *,
    mode: int,
    group: str | int | None = None,
    what: str = "unix socket",
    rcvbuf: int | None = None,
    make_parent: bool = False,
) -> BoundUnixSocket:
    """Bind `kind` (SOCK_STREAM or SOCK_DGRAM) at `path` with `mode` and `group`.

    `group` is a gid, a numeric string or a group name. SocketInUseError when another process
    listens on the path; ConfigError (naming `what` and the path) when it is not a socket, or
    the group does not exist.
    """
    path = Path(path)
    gid = group_id(group, what) if group not in (None, "") else -1
    if make_parent:
        try:  # systemd's RuntimeDirectory= makes it; without systemd the daemon does
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{what} {path}: cannot create its directory: {exc}") from exc
    remove_stale_socket(path, kind, what)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(str(path))
        inode = os.stat(path).st_ino
        os.chmod(path, mode)
        if gid >= 0:
            os.chown(path, -1, gid)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()
        raise ConfigError(f"{what} {path}: {exc}") from exc
    return BoundUnixSocket(sock, path, inode)


def group_id(group: str | int, what: str = "unix socket") -> int:
    """The gid of a group given by number (int or digits) or by name."""
    if isinstance(group, int):
        return group
    if group.isascii() and group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"{what}: group {group!r} does not exist") from None


def remove_stale_socket(path: Path, kind: socket.SocketKind, what: str = "unix socket") -> None:
    """Remove a socket file nobody listens on; refuse a live one and anything not a socket.

    Liveness is a connect() with the same socket type: refused means the owner is gone. Any
    other failure (a socket of the other type, no permission) leaves the file alone.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"{what} {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, kind)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno == errno.EPROTOTYPE:  # a live socket of the other type (a stale one refuses)
            raise SocketInUseError(
                f"{what} {path} is in use by another process (a socket of another type)"
            ) from None
        if exc.errno not in _NOBODY_LISTENS:
            raise ConfigError(f"{what} {path} cannot be checked or replaced: {exc}") from None
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise SocketInUseError(f"{what} {path} is in use by another process")
