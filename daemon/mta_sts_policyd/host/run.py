"""The host process: serve, re-read policies and certificates on SIGHUP and on change, stop.

A reload swaps what later requests see; connections in flight keep going (the listening
socket and its TLS context stay, the context looks certificates up per handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from mta_sts_policyd.host.acme_issuer import AcmeIssuer
from mta_sts_policyd.host.certificates import CertificateSet
from mta_sts_policyd.host.documents import PolicyDocuments
from mta_sts_policyd.host.renewal import Renewal
from mta_sts_policyd.host.report_intake import ReportEndpoint
from mta_sts_policyd.host.server import ChallengeLookup, make_app, start, tls_context
from mta_sts_policyd.reports_in.intake import Intake

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


class PolicyHost:
    def __init__(
        self,
        settings: HostSettings,
        challenges: ChallengeLookup | None = None,
        intake: Intake | None = None,
    ) -> None:
        self.settings = settings
        self.challenges = challenges
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
            )
            cert_dirs = (*cert_dirs, issuer.certs_dir)
            self.challenges = issuer.challenge_for
        self.certificates = CertificateSet(cert_dirs)
        if settings.acme_directory and settings.acme_state is not None:
            self.renewal = Renewal(issuer, self.certificates, settings.acme_names)
        self._stop = asyncio.Event()
        self._runners: list[object] = []

    def reload(self) -> None:
        self.documents.reload()
        self.certificates.reload()

    async def serve(self) -> None:
        """Until `stop()` (or SIGTERM/SIGINT when run by `run_host`)."""
        self.reload()
        routes = (self.settings.reports_path, self.reports) if self.reports else None
        app = make_app(self.documents, routes)
        context = tls_context(self.certificates, self.challenges)
        runners = [await start(app, host, port, context) for host, port in self.settings.listen]
        tasks = [asyncio.create_task(self._poll())]
        if self.renewal is not None:
            tasks.append(asyncio.create_task(self.renewal.run()))
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for runner in runners:
                await runner.cleanup()
            if self.reports is not None:
                self.reports.close()

    def stop(self) -> None:
        self._stop.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                self.reload()
            except Exception:  # a bug must not end the polling
                log.exception("event=host-reload-crashed")


def run_host(settings: HostSettings, intake: Intake | None = None) -> int:
    async def main() -> int:
        host = PolicyHost(settings, intake=intake)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, host.reload)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, host.stop)
        with contextlib.suppress(asyncio.CancelledError):
            await host.serve()
        return 0

    return asyncio.run(main())
