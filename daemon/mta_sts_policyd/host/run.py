"""The host process: serve, re-read policies and certificates on SIGHUP and on change, stop.

Under systemd (Type=notify) it reports READY=1 once it listens, so `systemctl reload` cannot
deliver a SIGHUP before the handler is there (the default action would end the process), and
RELOADING=1 / READY=1 around a reload. A reload swaps what later requests see; connections
in flight keep going (the listening socket and its TLS context stay, the context looks
certificates up per handshake). With ACME http-01 a plain-HTTP listener answers the
challenges (`challenge_http.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from mta_sts_policyd.host.acme_issuer import HTTP_01, TLS_ALPN_01, AcmeIssuer
from mta_sts_policyd.host.certificates import CertificateSet
from mta_sts_policyd.host.challenge_http import HttpAnswer, make_challenge_app
from mta_sts_policyd.host.documents import PolicyDocuments
from mta_sts_policyd.host.renewal import Renewal
from mta_sts_policyd.host.report_intake import ReportEndpoint
from mta_sts_policyd.host.server import (
    KEEPALIVE_TIMEOUT,
    ChallengeLookup,
    make_app,
    start,
    tls_context,
)
from mta_sts_policyd.net import systemd as sdnotify
from mta_sts_policyd.reports_in.intake import BodyIntake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostSettings:
    listen: tuple[tuple[str, int], ...]
    policy_dir: Path
    cert_dirs: tuple[Path, ...]
    poll_interval: float = 10.0
    acme_directory: str = ""
    """ACME directory URL; empty: certificates come from files only."""
    acme_names: tuple[str, ...] = ()
    acme_state: Path | None = None
    acme_email: str = ""
    acme_ca_file: str | None = None
    """Trust anchor for the ACME server's own HTTPS (test CAs); None: the system store."""
    reports_path: str = ""
    """Where senders POST TLS reports (RFC 8460 §5.4); empty: no intake."""
    reports_max_bytes: int = 1024 * 1024
    acme_challenge: str = TLS_ALPN_01
    """tls-alpn-01 (on the serving port) or http-01 (on `http_listen`)."""
    http_listen: tuple[tuple[str, int], ...] = ()
    """Plain-HTTP listeners for http-01 answers (nothing else is served there)."""
    renewal_tick: float = 60.0
    """Seconds between renewal checks (tests shorten it)."""
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    """Seconds an idle keep-alive connection stays open (tests shorten it)."""


Extras = Callable[["PolicyHost"], Sequence[Coroutine[Any, Any, None]]]
"""What else runs while the host serves (the status gauges), given the host's live state.
Called once the listeners are up, so a listener that cannot bind leaves no coroutine behind;
it may bind its own (the metrics endpoint) and raise OSError like a listener."""


class PolicyHost:
    def __init__(
        self,
        settings: HostSettings,
        challenges: ChallengeLookup | None = None,
        intake: BodyIntake | None = None,
        http_answer: HttpAnswer | None = None,
    ) -> None:
        self.settings = settings
        self.challenges = challenges
        self.http_answer = http_answer
        self.reports: ReportEndpoint | None = None
        if settings.reports_path and intake is not None:
            self.reports = ReportEndpoint(intake, settings.reports_max_bytes)
        self.documents = PolicyDocuments(settings.policy_dir)
        self.renewal: Renewal | None = None
        cert_dirs = settings.cert_dirs
        if settings.acme_directory and settings.acme_state is not None:
            issuer = AcmeIssuer(
                settings.acme_directory,
                settings.acme_state,
                settings.acme_email,
                settings.acme_ca_file,
                settings.acme_challenge,
            )
            cert_dirs = (*cert_dirs, issuer.certs_dir)
            if settings.acme_challenge == HTTP_01:
                self.http_answer = issuer.http_answer
            else:
                self.challenges = issuer.challenge_for
        self.certificates = CertificateSet(cert_dirs)
        if settings.acme_directory and settings.acme_state is not None:
            self.renewal = Renewal(issuer, self.certificates, settings.acme_names)
        self._stop = asyncio.Event()
        self._runners: list[object] = []

    def apply(self, settings: HostSettings) -> None:
        """What a SIGHUP takes from a re-read configuration: the names to get certificates for
        (issued at the next renewal check; a name taken out is no longer renewed) and the
        poll interval. Everything else needs a restart (service/host_parts.py says which)."""
        added = sorted(set(settings.acme_names) - set(self.settings.acme_names))
        removed = sorted(set(self.settings.acme_names) - set(settings.acme_names))
        self.settings = replace(
            self.settings, acme_names=settings.acme_names, poll_interval=settings.poll_interval
        )
        if self.renewal is not None:
            self.renewal.names = settings.acme_names
        if added or removed:
            log.info(
                "event=acme-names-changed added=%s removed=%s",
                ",".join(added) or "-",
                ",".join(removed) or "-",
            )

    def reload(self, force: bool = False) -> None:
        """`force` (SIGHUP): read every file again, not only those whose stamp changed."""
        self.documents.reload(force)
        self.certificates.reload(force)

    async def serve(
        self, extras: Callable[[], Sequence[Coroutine[Any, Any, None]]] | None = None
    ) -> None:
        """Until `stop()` (or SIGTERM/SIGINT when run by `run_host`); what `extras()` gives runs
        alongside, asked for only once every listener is up."""
        self.reload()
        runners: list[web.AppRunner] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._listen(runners)
            more = list(extras()) if extras is not None else []  # may raise: nothing made yet
            coroutines = [self._poll(), *more]
            if self.renewal is not None:
                coroutines.append(self.renewal.run(self.settings.renewal_tick))
            tasks = [asyncio.create_task(c) for c in coroutines]
            sdnotify.ready(f"serving {len(self.documents.domains)} domains")
            log.info("event=ready domains=%d pid=%d", len(self.documents.domains), os.getpid())
            await self._stop.wait()
            sdnotify.stopping()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for runner in runners:
                await runner.cleanup()
            if self.reports is not None:
                self.reports.close()

    async def _listen(self, runners: list[web.AppRunner]) -> None:
        """Every listener, each added to `runners` as it starts (cleaned up if a later one
        cannot bind)."""
        routes = (self.settings.reports_path, self.reports) if self.reports else None
        app = make_app(self.documents, routes)
        context = tls_context(self.certificates, self.challenges)
        idle = self.settings.keepalive_timeout
        for host, port in self.settings.listen:
            runners.append(await start(app, host, port, context, idle))
        if self.http_answer is not None:
            plain = make_challenge_app(self.http_answer)
            for host, port in self.settings.http_listen:
                runners.append(await start(plain, host, port, None, idle))

    def stop(self) -> None:
        self._stop.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                self.reload()
            except Exception:  # a bug must not end the polling
                log.exception("event=host-reload-crashed")


def _stop(host: PolicyHost, sig: signal.Signals) -> None:
    log.info("event=stopping signal=%s", sig.name)
    host.stop()


Reconfigure = Callable[["PolicyHost"], None]
"""What a SIGHUP does with the configuration file (re-read it, apply what it can)."""


def _reload(host: PolicyHost, reconfigure: Reconfigure | None) -> None:
    sdnotify.reloading()
    if reconfigure is not None:
        reconfigure(host)
    host.reload(force=True)
    sdnotify.ready(f"serving {len(host.documents.domains)} domains")


def run_host(
    settings: HostSettings,
    intake: BodyIntake | None = None,
    extras: Extras | None = None,
    reconfigure: Reconfigure | None = None,
) -> int:
    async def main() -> int:
        host = PolicyHost(settings, intake=intake)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, _reload, host, reconfigure)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop, host, sig)
        with contextlib.suppress(asyncio.CancelledError):
            await host.serve((lambda: extras(host)) if extras is not None else None)
        log.info("event=stopped")
        return 0

    return asyncio.run(main())
