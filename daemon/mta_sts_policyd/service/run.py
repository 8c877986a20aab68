"""The daemon as a process: signals, readiness, the event loop; the CLI's `serve` entry point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from mta_sts_policyd import __version__
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import StateLockedError, StateUnusableError
from mta_sts_policyd.net import systemd as sdnotify
from mta_sts_policyd.service.daemon import Daemon
from mta_sts_policyd.service.logsetup import setup_logging
from mta_sts_policyd.service.process_memory import freeze_startup_heap, limit_malloc_arenas

log = logging.getLogger(__name__)

EXIT_TEMPFAIL = 75


def run_daemon(
    config: Config,
    *,
    config_path: Path | None = None,
    cli_listen: list[str] | None = None,
    cli_state_dir: str | None = None,
) -> int:
    """`serve`: run until SIGTERM; returns the exit code. The overrides are kept for SIGHUP."""
    setup_logging(config.logging.level, config.logging.target, config.logging.file)
    daemon = Daemon(
        config, config_path=config_path, cli_listen=cli_listen, cli_state_dir=cli_state_dir
    )
    return run(daemon)


async def serve(daemon: Daemon) -> int:
    loop = asyncio.get_running_loop()
    try:
        await daemon.start()
    except (StateLockedError, StateUnusableError) as exc:
        log.error("event=start-failed reason=%r", str(exc))
        return exc.exit_code
    except OSError as exc:
        # e.g. an address or unix socket still held by the previous instance (SocketInUseError
        # included): one line, and 75 (retry).
        log.error("event=start-failed reason=%r", str(exc))
        return EXIT_TEMPFAIL
    freeze_startup_heap()
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
    loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
    sdnotify.notify(f"READY=1\nSTATUS=mta-sts-policyd {__version__} serving\nMAINPID={os.getpid()}")
    log.info("event=ready version=%s pid=%d", __version__, os.getpid())
    await daemon.wait()
    log.info("event=stopping")
    await daemon.stop()
    return 0


def run(daemon: Daemon) -> int:
    """Blocking entry point for `serve`; uses uvloop when it is installed."""
    limit_malloc_arenas()
    with contextlib.suppress(ImportError):
        import uvloop

        return int(uvloop.run(serve(daemon)))
    return asyncio.run(serve(daemon))
