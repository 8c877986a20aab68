"""One line per event, `key=value` fields; timestamps left to journald when it is the sink."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str = "INFO") -> None:
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "level=%(levelname)s logger=%(name)s %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mta_sts_policyd", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler._mta_sts_policyd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # sqlitedict's statement errors reach the store as exceptions and are logged once, as
    # event=store-write-failed; its own multi-line traces of them would only bury that line.
    logging.getLogger("sqlitedict").setLevel(logging.CRITICAL)
