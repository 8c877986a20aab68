"""Alerts for monitor transitions: a mail through an SMTP relay, and/or a command run with the
transitions as JSON on its standard input. Failures are logged, never fatal: the caller keeps
the transitions a channel failed to deliver and sends them again through that channel with the
next pass's."""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mta_sts_policyd.endpoints import parse_smtp_relay
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.tools.monitor.state import ALERT_CHANNELS, Transition

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


def alert_channels(settings: AlertSettings) -> tuple[str, ...]:
    """The configured channels (of ALERT_CHANNELS), in the order they are tried."""
    configured = {"mail": bool(settings.mail_to), "command": bool(settings.command)}
    return tuple(channel for channel in ALERT_CHANNELS if configured[channel])


async def send_alerts(
    settings: AlertSettings, pending: Mapping[str, Sequence[Transition]]
) -> dict[str, tuple[Transition, ...]]:
    """Each configured channel sends its own pending transitions, each channel tried; returns
    what a channel failed to deliver, by channel (empty: everything went out), so a retry
    goes only through the channel that failed."""
    unsent: dict[str, tuple[Transition, ...]] = {}
    for channel in alert_channels(settings):
        transitions = tuple(pending.get(channel, ()))
        if transitions and not await _send(settings, channel, transitions):
            unsent[channel] = transitions
    return unsent


async def _send(settings: AlertSettings, channel: str, transitions: Sequence[Transition]) -> bool:
    if channel == "mail":
        message = render_mail(settings, transitions)
        return await asyncio.to_thread(_send_mail, settings, message)
    return await _run_command(settings.command, transitions)


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
