"""Alerts for monitor transitions: a mail through an SMTP relay, and/or a command run with the
transitions as JSON on its standard input. Failures are logged, never fatal: the caller keeps
the transitions of a failed delivery and sends them again with the next pass's."""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mta_sts_policyd.endpoints import parse_smtp_relay
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.tools.monitor.state import Transition

log = logging.getLogger(__name__)
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class AlertSettings:
    mail_to: tuple[str, ...] = ()
    mail_from: str = ""
    smtp_relay: str = "localhost:25"
    command: tuple[str, ...] = ()
    """argv; run without a shell."""


def render_mail(settings: AlertSettings, transitions: Sequence[Transition]) -> EmailMessage:
    domains = sorted({t.domain for t in transitions})
    message = EmailMessage()
    message["From"] = settings.mail_from or "mta-sts-policyd@localhost"
    message["To"] = ", ".join(settings.mail_to)
    message["Subject"] = f"MTA-STS monitor: {len(transitions)} change(s) for {', '.join(domains)}"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="mta-sts-policyd.invalid")
    body = [t.line() for t in transitions]
    body += ["", "Run `mta-sts-policyd check DOMAIN` for the full findings and how to fix them."]
    message.set_content("\n".join(body) + "\n")
    return message


async def send_alerts(settings: AlertSettings, transitions: Sequence[Transition]) -> bool:
    """Every configured channel, each tried; False when one of them failed."""
    delivered = True
    if transitions and settings.mail_to:
        message = render_mail(settings, transitions)
        delivered = await asyncio.to_thread(_send_mail, settings, message)
    if transitions and settings.command:
        delivered = await _run_command(settings.command, transitions) and delivered
    return delivered


def _send_mail(settings: AlertSettings, message: EmailMessage) -> bool:
    try:
        host, port = parse_smtp_relay(settings.smtp_relay, "monitor.smtp_relay")
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException, ConfigError) as exc:
        log.error("event=monitor-alert-mail-failed relay=%s error=%s", settings.smtp_relay, exc)
        return False
    return True


async def _run_command(argv: Sequence[str], transitions: Sequence[Transition]) -> bool:
    payload = json.dumps([t.to_json() for t in transitions], indent=2).encode()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
        )
    except OSError as exc:
        log.error("event=monitor-alert-command-failed command=%s error=%s", argv[0], exc)
        return False
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            await process.communicate(payload)
    except TimeoutError:
        process.kill()
        await process.wait()
        log.error("event=monitor-alert-command-timeout command=%s", argv[0])
        return False
    if process.returncode != 0:
        log.error(
            "event=monitor-alert-command-failed command=%s exit=%s", argv[0], process.returncode
        )
        return False
    return True
