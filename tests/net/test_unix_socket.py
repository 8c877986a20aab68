"""The one unix-socket binder: live sockets are never taken over, stale ones are replaced,
mode and group (named or numeric) are set before anyone can use the socket."""

from __future__ import annotations

import grp
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta_sts_policyd.errors import ConfigError, SocketInUseError
from mta_sts_policyd.net.unix_socket import bind_unix_socket, group_id

KINDS = [socket.SOCK_STREAM, socket.SOCK_DGRAM]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="mtasts-u-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _other_group() -> grp.struct_group:
    """A group this process may give a file to, other than its own where possible."""
    allowed = {g.gr_gid for g in grp.getgrall()} if os.geteuid() == 0 else set(os.getgroups())
    others = sorted(allowed - {os.getegid()}) or [os.getegid()]
    return grp.getgrgid(others[0])


def _listener(path: Path, kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.bind(str(path))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


def _stale(path: Path, kind: socket.SocketKind) -> None:
    """What a killed process leaves: the file, and nobody behind it."""
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.bind(str(path))
    sock.close()


@pytest.mark.parametrize("kind", KINDS)
def test_live_socket_is_never_taken_over(sock_dir: Path, kind: socket.SocketKind) -> None:
    path = sock_dir / "s.sock"
    with _listener(path, kind) as live:
        inode = path.stat().st_ino
        in_use = f"^x {re.escape(str(path))} is in use by another process$"
        with pytest.raises(SocketInUseError, match=in_use):
            bind_unix_socket(path, kind, mode=0o600, what="x")
        assert path.stat().st_ino == inode
        if kind == socket.SOCK_STREAM:  # the first owner still gets its clients
            with socket.socket(socket.AF_UNIX, kind) as client:
                client.connect(str(path))
                live.accept()[0].close()


@pytest.mark.parametrize("kind", KINDS)
def test_stale_socket_is_replaced(sock_dir: Path, kind: socket.SocketKind) -> None:
    path = sock_dir / "s.sock"
    _stale(path, kind)
    bound = bind_unix_socket(path, kind, mode=0o660)
    try:
        assert path.stat().st_ino == bound.inode
        if kind == socket.SOCK_DGRAM:
            with socket.socket(socket.AF_UNIX, kind) as client:
                client.sendto(b"hello", str(path))
            assert bound.sock.recv(16) == b"hello"
    finally:
        bound.close()
    assert not path.exists()


def test_a_file_that_is_not_a_socket_is_kept(sock_dir: Path) -> None:
    path = sock_dir / "plain"
    path.write_text("keep")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        bind_unix_socket(path, socket.SOCK_STREAM, mode=0o600)
    assert path.read_text() == "keep"


@pytest.mark.parametrize("form", ["name", "int", "digits"])
def test_mode_and_group_named_or_numeric(sock_dir: Path, form: str) -> None:
    group = _other_group()
    given: str | int = {"name": group.gr_name, "int": group.gr_gid, "digits": str(group.gr_gid)}[
        form
    ]
    path = sock_dir / "s.sock"
    bound = bind_unix_socket(path, socket.SOCK_STREAM, mode=0o640, group=given)
    try:
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o640
        assert info.st_gid == group.gr_gid
    finally:
        bound.close()


def test_unknown_group_fails_before_anything_is_touched(sock_dir: Path) -> None:
    path = sock_dir / "s.sock"
    _stale(path, socket.SOCK_STREAM)
    with pytest.raises(ConfigError, match=r"^x: group 'no-such-group-xyz' does not exist$"):
        bind_unix_socket(path, socket.SOCK_STREAM, mode=0o600, group="no-such-group-xyz", what="x")
    assert path.exists()
    assert group_id(7) == 7 and group_id("7") == 7


def test_remove_file_leaves_a_successors_socket(sock_dir: Path) -> None:
    """On shutdown only our own file goes: a successor may already have bound the path."""
    path = sock_dir / "s.sock"
    first = bind_unix_socket(path, socket.SOCK_STREAM, mode=0o600)
    path.unlink()  # an operator cleaned up; the successor binds the path while we still run
    second = bind_unix_socket(path, socket.SOCK_STREAM, mode=0o600)
    first.close()
    assert path.stat().st_ino == second.inode
    second.close()
    assert not path.exists()


def test_parent_directory_is_made_when_asked(sock_dir: Path) -> None:
    path = sock_dir / "run" / "s.sock"
    bound = bind_unix_socket(path, socket.SOCK_DGRAM, mode=0o620, make_parent=True)
    bound.close()
    assert path.parent.is_dir()


@pytest.mark.parametrize("kind", KINDS)
def test_a_live_socket_of_the_other_type_is_in_use_too(
    sock_dir: Path, kind: socket.SocketKind
) -> None:
    """connect() with the other type says EPROTOTYPE only while the owner is alive (a stale
    file refuses): another process holds the path, a retry may succeed (75), no config error."""
    other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
    path = sock_dir / "s.sock"
    with _listener(path, other):
        inode = path.stat().st_ino
        with pytest.raises(SocketInUseError, match="in use by another process"):
            bind_unix_socket(path, kind, mode=0o600, what="x")
        assert path.stat().st_ino == inode  # left alone
    bound = bind_unix_socket(path, kind, mode=0o600, what="x")  # stale now: replaced
    bound.close()
