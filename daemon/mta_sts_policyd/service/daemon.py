"""The running daemon: resolver, listeners, cache flushing, eviction, reload and shutdown.

Its parts come from the composition root (composition.py); this module only runs them, and
listeners.py opens the socketmap listeners.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mta_sts_policyd.config.settings import (
    Config,
    config_warnings,
    load_config,
    with_overrides,
)
from mta_sts_policyd.discovery.client import Discovery
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.net import systemd as sdnotify
from mta_sts_policyd.policy import answer_log
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.postfix.server import SocketmapServer
from mta_sts_policyd.service import composition
from mta_sts_policyd.service.control import ControlServer
from mta_sts_policyd.service.listeners import open_listeners
from mta_sts_policyd.service.logsetup import setup_logging
from mta_sts_policyd.service.process_memory import release_free_memory
from mta_sts_policyd.service.reload import (
    log_reload_failed,
    log_restart_only,
    restart_only_changes,
)
from mta_sts_policyd.state_files import StateLock

if TYPE_CHECKING:
    from mta_sts_policyd.fleet.connection import FleetClient

log = logging.getLogger(__name__)

EVICTION_INTERVAL = 3600.0
BULK_WRITE = 1000
"""Rows in one flush from which freed memory is handed back to the OS afterwards."""
MAX_FLUSH_BACKOFF = 60.0
"""While the store cannot be written (full disk), retries slow down to at most one a minute."""


@dataclass
class Daemon:
    """One running instance; `run()` returns the process exit code."""

    config: Config
    config_path: Path | None = None
    cli_listen: list[str] | None = None
    cli_state_dir: str | None = None
    clock: Callable[[], float] = time.time
    resolver: PolicyResolver = field(init=False)
    server: SocketmapServer = field(init=False)
    _stop: asyncio.Event = field(init=False)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list, init=False)
    _closers: list[Callable[[], Any]] = field(default_factory=list, init=False)
    bound: list[tuple[str, int]] = field(default_factory=list, init=False)
    _lock: StateLock | None = field(default=None, init=False)
    fleet: FleetClient | None = field(default=None, init=False)
    _started_with: Config = field(init=False)
    """The configuration the listeners, sockets and stores were started with: a reload that
    changes a restart-only key is compared with it, so putting the file back says nothing."""

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._started_with = self.config
        log_config_warnings(self.config)
        self._hold_state_dir()
        try:
            await self._start_parts()
        except BaseException:
            await self._undo_start()
            raise

    async def _undo_start(self) -> None:
        """A start that failed half-way (a TLS-RPT socket in use) leaves nothing behind: the
        parts already started are stopped (the control socket file removed), the lock freed."""
        await self._stop_parts(deadline=0.0)
        resolver: PolicyResolver | None = getattr(self, "resolver", None)
        if resolver is not None:
            await asyncio.to_thread(resolver.cache.close)
        self._release_state_dir()

    def _hold_state_dir(self) -> None:
        """Create the state directory (0700) and lock it before anything in it is touched: a
        second `serve` must not take over the control socket or write the same stores."""
        self._lock = StateLock(composition.make_state_dir(self.config))
        self._lock.acquire()

    def _release_state_dir(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _start_parts(self) -> None:
        config = self.config
        cache = composition.make_policy_cache(config)
        discovery = composition.make_discovery(config)
        self._closers.append(self._close_discovery)  # the one in use then: a reload swaps it
        self.resolver = composition.make_resolver(config, discovery, cache, self.clock)
        self._start_fleet()
        started = time.monotonic()
        loaded = await asyncio.to_thread(cache.load, self.clock())
        for entry in cache.hot_entries():
            self.resolver.render(entry)
        log.info(
            "event=cache-loaded entries=%d in_memory=%d seconds=%.3f",
            loaded,
            len(cache),
            time.monotonic() - started,
        )
        await self._listen()
        control = ControlServer(self.resolver)
        await control.start(composition.control_socket_path(config))
        self._closers.append(control.close)
        self._spawn(self._flush_loop())
        self._spawn(self.resolver.run_refresh_loop())
        self._spawn(self._eviction_loop())
        await self._start_extras()

    def _start_fleet(self) -> None:
        """Fleet mode when configured (docs/fleet.md): the process's one guarded Redis client,
        the shared tier of the policy cache (with its invalidation subscriber and revalidation),
        the shared refresh queue and this node's heartbeat. No I/O here: Redis is reached on
        first use."""
        from mta_sts_policyd.service import fleet_parts

        settings = fleet_parts.check_fleet(self.config)
        if settings is None:
            return
        self.fleet = fleet_parts.make_fleet_client(settings)
        self._closers.append(self.fleet.aclose)  # closers run in reverse: the client last
        self.resolver.refresher.shared = fleet_parts.make_refresh_queue(settings, self.fleet)
        invalidations = fleet_parts.start_shared_cache(
            self.config, settings, self.fleet, self.resolver
        )
        self._spawn(invalidations.run())
        self._spawn(invalidations.run_revalidation())
        heartbeat = fleet_parts.make_heartbeat(settings, self.fleet, self.clock)
        self._spawn(heartbeat.run())
        self._closers.append(heartbeat.farewell)
        log.info("event=fleet-started node=%s key_prefix=%s", settings.node_name,
                 settings.key_prefix)  # fmt: skip

    async def _start_extras(self) -> None:
        """Metrics and TLS-RPT, each only when configured."""
        from mta_sts_policyd.service import optional

        self._closers.extend(await optional.start(self.config, self.resolver, self.server))

    async def _listen(self) -> None:
        self.server = composition.make_socketmap_server(self.config, self.resolver)
        self.bound = await open_listeners(self.server, self.config.server)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.append(asyncio.create_task(coro))

    def _flush_delay(self) -> float:
        """flush_interval, doubled per failed flush in a row up to MAX_FLUSH_BACKOFF."""
        interval = self.config.cache.flush_interval
        failures = min(self.resolver.cache.write_failures, 16)
        return float(min(interval * 2**failures, max(interval, MAX_FLUSH_BACKOFF)))

    async def _flush_loop(self) -> None:
        cache = self.resolver.cache
        while True:
            await asyncio.sleep(self._flush_delay())
            entries, deletions, touched = cache.take_batch()
            await asyncio.to_thread(cache.write_batch, entries, deletions, touched)
            if len(entries) + len(touched) >= BULK_WRITE:
                await asyncio.to_thread(release_free_memory)

    async def _eviction_loop(self) -> None:
        while True:
            await asyncio.sleep(EVICTION_INTERVAL)
            evicted = await asyncio.to_thread(self.resolver.cache.evict_store_overflow)
            if evicted:
                log.info("event=store-evicted entries=%d", evicted)

    def reload(self) -> None:
        """SIGHUP: re-read the config; keep the cache, the listeners and the state dir."""
        sdnotify.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            fresh = with_overrides(
                load_config(self.config_path), listen=self.cli_listen, state_dir=self.cli_state_dir
            )
        except ConfigError as exc:
            log_reload_failed(log, exc)
            sdnotify.notify("READY=1")
            return
        # What runs, not what was read, is compared.
        log_restart_only(log, restart_only_changes(self._started_with, fresh))
        try:
            setup_logging(fresh.logging.level, fresh.logging.target, fresh.logging.file)
        except ConfigError as exc:
            log.error("event=reload-logging-failed reason=%r kept=running-logging", str(exc))
        log_config_warnings(fresh)
        self.resolver.debug_answers = answer_log.enabled()  # rerender_all clears the memo
        # Always: a CA bundle or resolv.conf edited in place is new to the daemon even when the
        # configuration still names the same files.
        self._swap_discovery(composition.make_discovery(fresh))
        self.resolver.settings = composition.lookup_settings(fresh)
        self.resolver.rerender_all()
        self.config = fresh
        log.info("event=reloaded entries=%d", len(self.resolver.cache))
        sdnotify.notify("READY=1")

    def _swap_discovery(self, fresh: Discovery) -> None:
        """New resolver/HTTPS settings for every later discovery; fetches already running finish
        on the old client, which is closed once they cannot need it any more."""
        old = self.resolver.discovery
        self.resolver.discovery = fresh
        grace = self.config.discovery.fetch_timeout + self.config.discovery.dns_timeout
        if isinstance(old, Discovery):
            self._spawn(_close_later(old, grace))
        log.info("event=discovery-reconfigured")

    async def _close_discovery(self) -> None:
        discovery = self.resolver.discovery
        if isinstance(discovery, Discovery):
            await discovery.aclose()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self, deadline: float = 10.0) -> None:
        """Drain, stop every part, flush the cache. A part that fails to stop (a TLS-RPT store
        on a full disk) is logged and skipped: it must not cost the policy cache its flush."""
        sdnotify.notify("STOPPING=1")
        await self._stop_parts(deadline)
        lost = await asyncio.to_thread(self.resolver.cache.close)
        if lost:
            log.error("event=stopped entries_flushed=no lost=%d", lost)
        else:
            log.info("event=stopped entries_flushed=yes")
        self._release_state_dir()

    async def _stop_parts(self, deadline: float) -> None:
        """Drain the listeners (when they were started), cancel the loops, close every part
        in reverse order of start: what a stop and a failed start both do."""
        server: SocketmapServer | None = getattr(self, "server", None)
        if server is not None:
            await server.close(drain_deadline=deadline)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in reversed(self._closers):
            await _close_part(close)


def log_config_warnings(config: Config) -> None:
    """What `check-config` warns about (settings.config_warnings), in the log at start and
    reload: a daemon started without `check-config` says it too."""
    for warning in config_warnings(config):
        key, _, why = warning.partition(": ")
        log.warning("event=config-warning key=%s reason=%r", key, why)


async def _close_part(close: Callable[[], Any]) -> None:
    try:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    except Exception as exc:  # shutdown goes on: the remaining parts and the cache flush
        name = getattr(close, "__qualname__", repr(close))
        log.error("event=stop-step-failed step=%s reason=%r", name, str(exc))


async def _close_later(discovery: Discovery, delay: float) -> None:
    await asyncio.sleep(delay)
    await discovery.aclose()
