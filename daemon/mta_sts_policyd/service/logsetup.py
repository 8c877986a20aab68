"""One line per event, `key=value` fields, to the target the operator chose (`[logging]`).

- `journal`: stderr read by journald. Each line starts with its syslog priority (`<4>` for a
  warning) so `journalctl -p warning` selects by level; no timestamp (journald adds its own).
- `stderr`, `file`: ISO 8601 timestamps with the zone offset (`2026-12-02T04:37:06.123+00:00`),
  so lines from hosts in different zones compare correctly. A file is reopened when logrotate
  moves it (WatchedFileHandler).
- `syslog`: the local syslog socket (`/dev/log`), facility mail, like Postfix itself.
- `auto` (default): `journal` when stderr is the journal stream systemd gave us, else `stderr`.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from datetime import datetime

from mta_sts_policyd.errors import ConfigError

FORMAT = "level=%(levelname)s logger=%(name)s %(message)s"
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
_MARK = "_mta_sts_policyd"


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


class OneLineFormatter(logging.Formatter):
    """Every record is one line that says one event: control characters in the message (a
    socketmap key, a header from a report, anything a peer sent) are written escaped, so that a
    value with a newline cannot start a forged line. A traceback stays below its record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROL)
        return super().formatMessage(record)


class JournalFormatter(OneLineFormatter):
    """`<priority>` prefix (journald's SyslogLevelPrefix), one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 2 if record.levelno > 40 else 7)
        return f"<{priority}>" + super().format(record).replace("\n", "\n    ")


class ZonedFormatter(OneLineFormatter):
    """ISO 8601 local time with its UTC offset, to the millisecond."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created).astimezone()
        return moment.isoformat(timespec="milliseconds")


SYSLOG_SOCKET = "/dev/log"
"""The local syslog daemon's socket (rsyslog, syslog-ng, journald's /dev/log)."""


def stderr_is_journal() -> bool:
    """True when systemd connected stderr to journald (JOURNAL_STREAM names its device:inode)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


def make_handler(target: str, file: str = "") -> logging.Handler:
    if target == "auto":
        target = "journal" if stderr_is_journal() else "stderr"
    handler: logging.Handler
    if target == "journal":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter(FORMAT))
    elif target == "syslog":
        handler = logging.handlers.SysLogHandler(
            SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_MAIL
        )
        handler.setFormatter(OneLineFormatter(f"mta-sts-policyd[{os.getpid()}]: {FORMAT}"))
    else:
        stream = target == "stderr"
        handler = logging.StreamHandler(sys.stderr) if stream else _file_handler(file)
        handler.setFormatter(ZonedFormatter("%(asctime)s " + FORMAT))
    return handler


def _file_handler(path: str) -> logging.Handler:
    return logging.handlers.WatchedFileHandler(path, encoding="utf-8")


def setup_logging(level: str = "INFO", target: str = "auto", file: str = "") -> None:
    """(Re)configure the root logger; a reload replaces only the handler installed here."""
    root = logging.getLogger()
    try:
        handler = make_handler(target, file)
    except OSError as exc:
        where = f"logging.file {file!r}" if target == "file" else f"logging.target {target!r}"
        raise ConfigError(f"{where}: cannot open: {exc.strerror or exc}") from None
    remove_handler(root)
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # sqlitedict's statement errors reach the store as exceptions and are logged once, as
    # event=store-write-failed; its own multi-line traces of them would only bury that line.
    logging.getLogger("sqlitedict").setLevel(logging.CRITICAL)


def remove_handler(root: logging.Logger) -> None:
    """Take out (and close) the handler `setup_logging` installed, if any."""
    for old in list(root.handlers):
        if getattr(old, _MARK, False):
            root.removeHandler(old)
            old.close()
