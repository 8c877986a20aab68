"""Files in the state directory: private modes, one `serve` per directory, causes in words.

Why one module: the policy store, the TLS-RPT store and `serve` all create and open files in
the state directory, and all must agree on three things. Modes: the directory 0700 and the
SQLite files 0600 whatever the umask of whoever started the daemon (SQLite gives its -wal and
-shm files the mode of the database file). Damage: only SQLite's "not a database" / "malformed"
(or a failed quick_check) means a damaged file that may be moved aside; a full disk, a
read-only mount or missing permissions leave every file where it is and stop the start with one
line naming the path and the cause. Ownership: an exclusive lock, so a second daemon cannot
write the same files or take over the control socket.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import tempfile
from pathlib import Path

from mta_sts_policyd.errors import StateLockedError, StateUnusableError

DIR_MODE = 0o700
FILE_MODE = 0o600

# Every file the daemon and its commands keep in the state directory, named once (the README's
# backup and file-mode notes, the systemd unit and the tests refer to these names).
LOCK_NAME = "serve.lock"
POLICY_STORE_NAME = "policies.sqlite"
TLSRPT_STORE_NAME = "tlsrpt.sqlite"
REPORTS_IN_STORE_NAME = "reports-in.sqlite"
CONTROL_NAME = "control.sock"
QUARANTINE_NAME = "tlsrpt-quarantine.log"
MAILLOG_POSITION = "maillog.pos"
JOURNAL_CURSOR = "journal.cursor"
REPORTS_IN_QUARANTINE = "reports-in-quarantine"
"""A directory: received reports that could not be read."""
MONITOR_STATE_NAME = "monitor.json"
_DENIED = (errno.EACCES, errno.EPERM)
_DAMAGED_CODES = (11, 26)
"""SQLITE_CORRUPT ("database disk image is malformed"), SQLITE_NOTADB ("file is not a
database"): the only SQLite errors that say the file itself is bad."""


class DamagedFile(sqlite3.DatabaseError):
    """A quick_check that did not answer "ok"."""


def is_damaged(exc: BaseException) -> bool:
    """True only when the file's content is bad (never for full, read-only or unreadable)."""
    if isinstance(exc, DamagedFile):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and code is not None
        and code & 0xFF in (_DAMAGED_CODES)
    )


def quick_check(conn: sqlite3.Connection) -> None:
    """Raise DamagedFile unless SQLite's quick_check of the open database says "ok"."""
    row = conn.execute("PRAGMA quick_check").fetchone()
    if row is None or row[0] != "ok":
        raise DamagedFile(f"quick_check: {row[0] if row else 'no answer'}")


def cause(path: Path, exc: BaseException) -> str:
    """Why `path` cannot be used, in words an operator can act on, plus the raw error."""
    directory = path if os.path.isdir(path) else path.parent
    raw = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    try:
        fs = os.statvfs(directory)
    except OSError:
        return _with_raw(f"{directory} does not exist or cannot be searched", raw)
    code = getattr(exc, "errno", None)
    if fs.f_flag & os.ST_RDONLY or code == errno.EROFS:
        return _with_raw("read-only file system", raw)
    for target in (path, directory):  # os.path.exists: False, not an error, when hidden
        if os.path.exists(target) and not os.access(target, os.W_OK):
            return _with_raw(f"not writable by uid {os.geteuid()}", raw)
    full = getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or code == errno.ENOSPC
    if full or fs.f_bavail == 0:
        return _with_raw("file system full", raw)
    return raw


def _with_raw(words: str, raw: str) -> str:
    return words if raw.lower() == words.lower() else f"{words} ({raw})"


def unusable(path: Path, doing: str, exc: BaseException) -> StateUnusableError:
    """The one-line start error for a state file that cannot be used (nothing is renamed)."""
    return StateUnusableError(f"{path}: cannot {doing}: {cause(path, exc)}")


def refuse_non_directory(path: Path, doing: str) -> None:
    """StateUnusableError when `path` exists and is not a directory (a file where the state
    directory should be): said as such, not as "nothing stored yet"."""
    if os.path.exists(path) and not os.path.isdir(path):
        exc = NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory")
        raise unusable(path, doing, exc)


def make_private_dir(path: Path) -> None:
    """Create the state directory 0700 (an existing one keeps the mode its owner gave it)."""
    if os.path.isdir(path):
        return
    try:
        path.mkdir(parents=True, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        refuse_non_directory(path, "create the state directory")
    except OSError as exc:
        hint = " (run as root, or pass --state-dir DIR)" if exc.errno in _DENIED else ""
        raise StateUnusableError(
            f"cache.state_dir: cannot create {path}: {cause(path.parent, exc)}{hint}"
        ) from None


def create_private_file(path: Path) -> None:
    """Create an empty file 0600 unless it exists (OSError when it cannot be created)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)  # os.open's mode is filtered by the umask too
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` in one step, with `mode` whatever the umask: a reader (the
    policy host, the certificate loader) never sees half a file or a key without its chain."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def move_aside(path: Path) -> Path:
    """Rename a damaged file (and its WAL/SHM, which must not meet a new file of that name) to
    `<name>.corrupt[.N]`; never delete it (forensics)."""
    target = path.with_name(path.name + ".corrupt")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt.{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target


class StateLock:
    """An exclusive flock on `<state_dir>/serve.lock`, held while `serve` runs.

    flock, not a pid file: the kernel drops the lock when the holder dies (kill -9 included), so
    nothing stale is ever left to clean up. The file keeps the holder's pid for the error text.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise unusable(self.path, "create the lock file", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateLockedError(
                f"{self.path.parent}: in use by another mta-sts-policyd serve (pid {holder}); "
                "stop it, or give this one another --state-dir"
            ) from None
        self._fd = fd
        try:  # only for the error text above: a full disk must not stop the daemon here
            os.fchmod(fd, FILE_MODE)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        """Drop the lock; the file stays (removing it would race with the next holder)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
