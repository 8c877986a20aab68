"""Assembles the running daemon: listeners, resolver, cache flushing, refresh, reload, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mta_sts_policyd import __version__
from mta_sts_policyd.config.settings import (
    Config,
    load_config,
    parse_listen_address,
    with_overrides,
)
from mta_sts_policyd.discovery.client import Discovery
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.net import systemd as sdnotify
from mta_sts_policyd.policy.cache import PolicyCache, PolicyStore
from mta_sts_policyd.policy.resolver import LookupSettings, PolicyResolver
from mta_sts_policyd.postfix.server import SocketmapServer, systemd_listen_sockets
from mta_sts_policyd.postfix.socketmap import REPLY_NOTFOUND
from mta_sts_policyd.service.control import ControlServer
from mta_sts_policyd.service.logsetup import setup_logging
from mta_sts_policyd.service.process_memory import (
    freeze_startup_heap,
    limit_malloc_arenas,
    release_free_memory,
)

log = logging.getLogger(__name__)

STORE_NAME = "policies.sqlite"
CONTROL_NAME = "control.sock"
EVICTION_INTERVAL = 3600.0
BULK_WRITE = 1000
"""Rows in one flush from which freed memory is handed back to the OS afterwards."""


def postfix_version(postconf: str) -> tuple[int, ...] | None:
    """The installed Postfix's version (`postconf -d -h mail_version`), or None when unknown.

    `-d` reads the compiled-in value, so it works without a main.cf and costs ~10 ms.
    """
    out = postfix_settings_default(postconf, "mail_version")
    if out is None:
        return None
    parts = out.split("-")[0].split(".")
    return tuple(int(p) for p in parts) if parts and all(p.isdigit() for p in parts) else None


def decide_sts_attributes(config: Config) -> bool:
    """C.4.2: the 3.10 attributes break Postfix <= 3.9, so `auto` enables them only when sure."""
    setting = config.server.sts_attributes
    if setting != "auto":
        log.info("event=sts-attributes enabled=%s source=config", setting)
        return bool(setting)
    version = postfix_version(config.server.postconf)
    enabled = version is not None and version >= (3, 10)
    shown = ".".join(map(str, version)) if version else "unknown"
    log.info("event=sts-attributes enabled=%s source=postconf postfix_version=%s", enabled, shown)
    return enabled


DANE_REPLIES: dict[str, bytes | None] = {
    "off": None,
    "notfound": REPLY_NOTFOUND,
    "dane": b"OK dane",
    "dane-only": b"OK dane-only",
}


def postfix_settings_default(postconf: str, name: str) -> str | None:
    """A parameter's compiled-in default (`postconf -d -h`): needs no main.cf."""
    try:
        return subprocess.run(
            [postconf, "-d", "-h", name], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def postfix_settings(postconf: str, *names: str) -> list[str] | None:
    """Values of main.cf parameters (`postconf -h`), or None when Postfix cannot be asked.

    Without a main.cf, postconf fails only after a one-second pause: look for the file first.
    """
    directory = postfix_settings_default(postconf, "config_directory")
    if directory is None or not (Path(directory) / "main.cf").exists():
        return None
    try:
        out = subprocess.run(
            [postconf, "-h", *names], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.splitlines()]


def decide_dane(config: Config) -> bytes | None:
    """A57: with Postfix doing DANE, a DANE destination must keep Postfix's dane level."""
    mode = config.server.dane
    if mode == "auto":
        values = postfix_settings(
            config.server.postconf, "smtp_tls_security_level", "smtp_dns_support_level"
        )
        level, support = values if values and len(values) == 2 else ("", "")
        postfix_dane = level.lower() in ("dane", "dane-only") and support.lower() == "dnssec"
        mode = "notfound" if postfix_dane else "off"
        log.info("event=dane mode=%s source=postconf level=%r dns_support=%r", mode, level, support)
    return DANE_REPLIES[mode]


def lookup_settings(config: Config, sts_attributes: bool) -> LookupSettings:
    c = config.cache
    return LookupSettings(
        txt_recheck=c.txt_recheck,
        cold_wait=c.cold_wait,
        negative_ttl=c.negative_ttl,
        failure_backoff=c.failure_backoff,
        refresh=c.refresh,
        refresh_interval=c.refresh_interval,
        refresh_jitter=c.refresh_jitter,
        refresh_concurrency=c.refresh_concurrency,
        sts_attributes=sts_attributes,
        exact_wildcards=config.server.exact_wildcards,
        dane_reply=decide_dane(config),
    )


def make_discovery(config: Config) -> Discovery:
    d = config.discovery
    return Discovery(
        nameservers=d.nameservers,
        dns_timeout=d.dns_timeout,
        fetch_timeout=d.fetch_timeout,
        ca_file=d.ca_file or None,
        https_port=d.https_port,
    )


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

    async def start(self) -> None:
        self._stop = asyncio.Event()
        config = self.config
        state_dir = config.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cache.state_dir: cannot create {state_dir}: {exc.strerror} "
                "(run as root, or pass --state-dir DIR)"
            ) from None
        cache = PolicyCache(
            PolicyStore(state_dir / STORE_NAME),
            memory_entries=config.cache.memory_entries,
            max_entries=config.cache.max_entries,
        )
        discovery = make_discovery(config)
        self._closers.append(discovery.aclose)
        settings = lookup_settings(config, decide_sts_attributes(config))
        self.resolver = PolicyResolver(discovery, cache, settings, clock=self.clock)
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
        await control.start(state_dir / CONTROL_NAME)
        self._closers.append(control.close)
        self._spawn(self._flush_loop())
        self._spawn(self.resolver.run_refresh_loop())
        self._spawn(self._eviction_loop())
        await self._start_extras()

    async def _start_extras(self) -> None:
        """Metrics and TLS-RPT, each only when configured."""
        from mta_sts_policyd.service import optional

        self._closers.extend(await optional.start(self.config, self.resolver, self.server))

    async def _listen(self) -> None:
        s = self.config.server
        self.server = SocketmapServer(
            self.resolver.answer,
            max_connections=s.max_connections,
            idle_timeout=s.idle_timeout,
            fast_reply=self.resolver.memo.reply,
        )
        inherited = systemd_listen_sockets()
        if inherited:
            await self.server.adopt_sockets(inherited)
            log.info("event=listening source=systemd sockets=%d", len(inherited))
            return
        for address in s.listen:
            if address.startswith("unix:"):
                group = s.unix_group or None
                await self.server.listen_unix(address[5:], int(s.unix_mode, 8), group)
                log.info("event=listening address=%s", address)
                continue
            host, port = parse_listen_address(address, "server.listen")
            self.bound.append(await self.server.listen_tcp(host, port))
            log.info("event=listening address=%s:%d", *self.bound[-1])

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.append(asyncio.create_task(coro))

    async def _flush_loop(self) -> None:
        cache = self.resolver.cache
        while True:
            await asyncio.sleep(self.config.cache.flush_interval)
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
            log.error("event=reload-failed reason=%r keeping the running configuration", str(exc))
            sdnotify.notify("READY=1")
            return
        pending = restart_only_changes(self.config, fresh)
        if pending:
            log.warning(
                "event=reload-needs-restart keys=%s reason='these take effect on restart'",
                ",".join(pending),
            )
        setup_logging(fresh.logging.level)
        if fresh.discovery != self.config.discovery:
            self._swap_discovery(make_discovery(fresh))
        settings = lookup_settings(fresh, decide_sts_attributes(fresh))
        self.resolver.settings = settings
        self.resolver.rerender_all()
        self.config = fresh
        log.info("event=reloaded entries=%d", len(self.resolver.cache))
        sdnotify.notify("READY=1")

    def _swap_discovery(self, fresh: Discovery) -> None:
        """New resolver/HTTPS settings for every later discovery; fetches already running finish
        on the old client, which is closed once they cannot need it any more."""
        old = self.resolver.discovery
        self.resolver.discovery = fresh
        self._closers.append(fresh.aclose)
        grace = self.config.discovery.fetch_timeout + self.config.discovery.dns_timeout
        if isinstance(old, Discovery):
            self._spawn(_close_later(old, grace))
        log.info("event=discovery-reconfigured")

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self, deadline: float = 10.0) -> None:
        sdnotify.notify("STOPPING=1")
        await self.server.close(drain_deadline=deadline)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in reversed(self._closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result
        cache = self.resolver.cache
        await asyncio.to_thread(cache.close)
        log.info("event=stopped entries_flushed=yes")


EXIT_TEMPFAIL = 75


RELOADABLE = {
    "logging": None,
    "discovery": None,
    "cache": ("txt_recheck", "cold_wait", "negative_ttl", "failure_backoff", "refresh",
              "refresh_interval", "refresh_jitter", "refresh_concurrency"),
    "server": ("sts_attributes", "dane", "exact_wildcards", "postconf"),
}  # fmt: skip
"""Sections (None: all of it) and keys a SIGHUP applies; everything else needs a restart."""


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """Dotted keys that differ between two configs but only take effect on restart."""
    changed: list[str] = []
    for section in dataclasses.fields(old):
        before, after = getattr(old, section.name), getattr(new, section.name)
        reloadable = RELOADABLE.get(section.name, ())
        if before == after or (section.name in RELOADABLE and reloadable is None):
            continue
        for key in dataclasses.fields(before):
            if key.name not in (reloadable or ()) and (
                getattr(before, key.name) != getattr(after, key.name)
            ):
                changed.append(f"{section.name}.{key.name}")
    return changed


async def _close_later(discovery: Discovery, delay: float) -> None:
    await asyncio.sleep(delay)
    await discovery.aclose()


async def serve(daemon: Daemon) -> int:
    loop = asyncio.get_running_loop()
    try:
        await daemon.start()
    except OSError as exc:
        # e.g. the address is still held by the previous instance: one line, and 75 (retry).
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
