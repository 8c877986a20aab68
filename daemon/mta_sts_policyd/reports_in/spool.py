"""The spool between the policy host's HTTPS intake and the daemon's store.

The host runs as its own user and cannot open the daemon's store (the daemon's state
directory is 0700, another user). So the host checks each POSTed report (parser, own-domain
rule) and delivers the accepted body into a Maildir that both units may write through one
group (`[reports_in] spool_dir`, systemd/mta-sts-policyd.tmpfiles): wrapped as a mail message
of RFC 8460 §5.3's shape (the report attached with its own media type), so the daemon takes
it with the same `scan_maildir` as a mailbox, and `reports-in --maildir SPOOL` works by hand.

Delivery is Maildir's (write into tmp/, fsync, rename into new/, fsync new/): the host
answers 2xx only after that, so an accepted report survives a crash or a stopped daemon; `serve`
takes the spool every `[reports_in] spool_interval` seconds and removes what the store holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from mta_sts_policyd.errors import ReportRejected, StoreError
from mta_sts_policyd.reports_in.intake import Intake, Outcome, Quarantine
from mta_sts_policyd.reports_in.maildir import scan_maildir
from mta_sts_policyd.reports_in.parse import parse_report
from mta_sts_policyd.reports_in.unpack import MAX_INFLATED, documents_from_body

log = logging.getLogger(__name__)

FILE_MODE = 0o640
"""Readable by the spool's group (the daemon), whatever the writer's umask."""
JOIN_THE_GROUP = " (the unit needs systemd/mta-sts-policyd.service.d/reports-spool.conf)"
_NAMES = {"application/tlsrpt+gzip": "report.json.gz", "application/tlsrpt+json": "report.json"}


def as_message(body: bytes, content_type: str, source: str, now: float) -> bytes:
    """A POSTed body as the mail a sender would have sent (RFC 8460 §5.3)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    maintype, subtype = kind.split("/", 1)
    message = EmailMessage()
    message["Subject"] = "TLS report received over HTTPS"
    message["Date"] = formatdate(now, usegmt=True)
    message["X-Mta-Sts-Policyd-Source"] = source
    message.set_content("TLS report POSTed to the policy host (RFC 8460 §5.4).\n")
    message.add_attachment(
        body, maintype=maintype, subtype=subtype, filename=_NAMES.get(kind, "report")
    )
    return message.as_bytes()


def deliver(root: Path, data: bytes, now: float) -> Path:
    """Maildir delivery into root/new; returns the file once it is on disk."""
    name = f"{int(now)}.{uuid.uuid4().hex}.{socket.gethostname().replace('/', '_')}"
    tmp, new = root / "tmp" / name, root / "new" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(tmp, new)
    directory = os.open(root / "new", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return new


@dataclass
class SpoolIntake:
    """The host's side: the intake's checks, then delivery into the spool (no store here).

    Same interface as Intake for the HTTPS endpoint; `stored` counts a delivered body. A
    report already stored is not known here: the daemon counts it once when it takes it.
    """

    root: Path
    own_domains: frozenset[str]
    quarantine: Quarantine
    clock: Callable[[], float]
    max_inflated: int = MAX_INFLATED

    def take_body(self, body: bytes, content_type: str, source: str) -> Outcome:
        try:
            documents = documents_from_body(body, content_type, self.max_inflated)
        except ReportRejected as exc:
            return self.refuse(body, exc.reason, source)
        outcome = Outcome()
        for document in documents:
            try:
                report = parse_report(document)
            except ReportRejected as exc:
                outcome.rejected += self.refuse(body, exc.reason, source).rejected
                continue
            if not any(p.policy_domain in self.own_domains for p in report.policies):
                others = ",".join(sorted(report.domains))
                reason = f"report {report.report_id} is about {others}, not an own domain"
                outcome.rejected += self.refuse(body, reason, source).rejected
                continue
            outcome.stored += 1
        if outcome.stored:
            now = self.clock()
            try:
                path = deliver(self.root, as_message(body, content_type, source, now), now)
            except OSError as exc:
                raise StoreError(f"spool {self.root}: {exc}") from exc
            log.info("event=report-spooled source=%s file=%s", source, path.name)
        return outcome

    def refuse(self, raw: bytes, reason: str, source: str) -> Outcome:
        kept = self.quarantine.put(raw, reason, self.clock())
        log.warning("event=report-rejected source=%s reason=%r kept=%s", source, reason, kept)
        return Outcome(rejected=[reason])

    def prune(self) -> int:
        """Nothing to prune on the host: the daemon's store keeps the retention."""
        return 0


def take_spool(root: Path, intake: Callable[[], Intake]) -> tuple[int, int]:
    """One pass over the spool: (taken, rejected). Taken messages are removed (the store has
    them), rejected ones go to the spool's `.Rejected` folder; StoreError leaves the rest.
    The intake (its store) is only opened when there is something to take."""
    new = root / "new"
    if not new.is_dir() or not any(p.is_file() for p in new.iterdir()):
        return 0, 0
    result = scan_maildir(root, intake(), keep_taken=False)
    if result.taken:
        intake().prune()
    return result.taken, result.rejected


async def watch_spool(
    root: Path,
    intake: Callable[[], Intake],
    interval: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """`serve`'s loop over the spool (the store's writes run off the event loop)."""
    failing = False
    while True:
        try:
            taken, rejected = await asyncio.to_thread(take_spool, root, intake)
        except (StoreError, OSError) as exc:
            if not failing:
                hint = JOIN_THE_GROUP if isinstance(exc, PermissionError) else ""
                log.warning("event=report-spool-failed spool=%s reason=%r%s", root, str(exc), hint)
            failing = True
        else:
            if failing:
                log.info("event=report-spool-recovered spool=%s", root)
            failing = False
            if taken or rejected:
                log.info("event=report-spool-taken spool=%s taken=%d rejected=%d", root, taken,
                         rejected)  # fmt: skip
        await sleep(interval)
