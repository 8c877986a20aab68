"""Report transports: SMTP submission to the local relay and HTTPS POST (RFC 8460 §5.3-§5.4).

Unlike sys4's reporter, only a 2xx HTTP answer or an accepted SMTP transaction counts
as delivered. Errors are classified: `temporary=False` (5xx SMTP reply, refused destination)
stops retrying that destination, everything else is retried by the scheduler.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from mta_sts_policyd.errors import ConfigError, MtaStsError
from mta_sts_policyd.net.tls import Verify, client_context
from mta_sts_policyd.tlsrpt.message import (
    CONTENT_TYPE_GZIP,
    DkimSettings,
    build_message,
    message_id_for,
    sign_message,
    signature_header,
    stable_message_id,
)
from mta_sts_policyd.tlsrpt.record import RuaDestination
from mta_sts_policyd.tlsrpt.report import ReportDocument

__all__ = [
    "DeliveryError",
    "DeliverySettings",
    "DkimSettings",
    "NetworkTransport",
    "Stamp",
    "Transport",
    "check_dkim_key",
]

log = logging.getLogger(__name__)


class DeliveryError(MtaStsError):
    def __init__(self, reason: str, *, temporary: bool = True) -> None:
        self.reason = reason
        self.temporary = temporary
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    envelope_sender: str
    """MAIL FROM of report mail; bounces go here, not to the daemon's local user."""
    from_address: str | None = None
    """Header From; defaults to envelope_sender. Its domain should be the DKIM domain."""
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_timeout: float = 60.0
    https_timeout: float = 30.0
    https_verify: bool = True
    """RFC 8460 §3 lets reporters ignore certificate errors (RFC 8460 §5.4); default is to
    verify."""
    https_ca_file: str | None = None
    allow_private_destinations: bool = False
    """https rua resolving to loopback/private addresses are refused unless set (SSRF hygiene)."""
    send_delay_max: float = 4 * 3600.0
    retry_window: float = 24 * 3600.0
    catch_up_days: int = 7

    @property
    def header_from(self) -> str:
        return self.from_address or self.envelope_sender


@dataclass(frozen=True, slots=True)
class Stamp:
    """What makes a report's mail one fixed byte string (fleet mode): its Date and, when
    signed, the DKIM-Signature header made for it once (DKIM's t= is the signing time).
    The Message-ID then derives from the report and destination (stable_message_id)."""

    date: float
    dkim_signature: bytes | None = None


class Transport(Protocol):
    async def deliver(self, doc: ReportDocument, dest: RuaDestination) -> None:
        """Deliver one report to one destination or raise DeliveryError."""


def load_dkim_key(dkim: DkimSettings) -> bytes | None:
    """The PEM key, or None when unsigned sending is explicitly allowed; else an error."""
    if dkim.configured:
        try:
            return Path(dkim.private_key_path).read_bytes()
        except OSError as exc:
            raise DeliveryError(f"cannot read DKIM key: {exc}") from exc
    if dkim.allow_unsigned:
        return None
    raise DeliveryError(
        "no DKIM key configured and allow_unsigned is off (RFC 8460 §3)", temporary=False
    )


CREDENTIALS_ROOT = "/run/credentials/"
"""systemd puts a unit's credentials (LoadCredential=) here; only that unit's processes see them."""
_TRIAL = b"From: a@invalid\r\nTo: b@invalid\r\nSubject: key check\r\n\r\nkey check\r\n"


def check_dkim_key(
    dkim: DkimSettings, *, outside_ok: bool = False, environ: Mapping[str, str] = os.environ
) -> str | None:
    """Read the key and sign a trial message with it now: a broken key must stop `serve` and
    `check-config`, not the first report after midnight. Raises ConfigError naming the path.

    With `outside_ok` (check-config run by hand) a systemd credential this process cannot see
    (it is not inside the service) is not an error: the returned note says so.
    """
    if not dkim.configured:
        return None
    path = dkim.private_key_path
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        where = _credential_note(path, environ)
        if where and outside_ok:
            return f"tlsrpt.dkim.key_file: not checked: {where}; `serve` checks it at start"
        cause = exc.strerror or str(exc)
        raise ConfigError(
            f"tlsrpt.dkim.key_file: cannot read {path}: {cause}" + (f" ({where})" if where else "")
        ) from None
    try:
        sign_message(_TRIAL, dkim, key)
    except Exception as exc:  # dkimpy raises its own types (and binascii/ValueError) per problem
        raise ConfigError(
            f"tlsrpt.dkim.key_file: {path} is not a usable DKIM private key "
            f"(expected an RSA key in PEM, PKCS#1 or PKCS#8): {exc}"
        ) from None
    return None


def _credential_note(path: str, environ: Mapping[str, str]) -> str | None:
    """Why a systemd credential path is absent here: this process runs outside the service."""
    inside = environ.get("CREDENTIALS_DIRECTORY")
    if not path.startswith(CREDENTIALS_ROOT) or (inside and path.startswith(inside)):
        return None
    return (
        f"{path} is a systemd credential, which exists only inside the service "
        "(LoadCredential=); check the file that LoadCredential= names"
    )


def smtp_submit(message: bytes, sender: str, rcpt: str, settings: DeliverySettings) -> None:
    """Blocking SMTP transaction; run it in a thread."""
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            smtp.sendmail(sender, [rcpt], message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise DeliveryError(
            f"recipient refused: {exc.recipients}", temporary=any(c < 500 for c in codes)
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(
            f"SMTP {exc.smtp_code} {exc.smtp_error!r}", temporary=exc.smtp_code < 500
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP relay {settings.smtp_host}:{settings.smtp_port}: {exc}") from exc


async def _check_public(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, 443)
    except OSError as exc:
        raise DeliveryError(f"cannot resolve {host}: {exc}") from exc
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not addr.is_global:
            raise DeliveryError(f"{host} resolves to non-public {addr}", temporary=False)


async def https_post(body: bytes, url: str, settings: DeliverySettings) -> None:
    """POST application/tlsrpt+gzip (RFC 8460 §5.4); only 2xx is success, no redirects."""
    if not settings.allow_private_destinations:
        await _check_public(url)
    try:
        async with httpx.AsyncClient(
            verify=_tls_context(settings), timeout=settings.https_timeout
        ) as client:
            resp = await client.post(url, content=body, headers={"Content-Type": CONTENT_TYPE_GZIP})
    except httpx.HTTPError as exc:
        raise DeliveryError(f"HTTPS {url}: {type(exc).__name__}: {exc}") from exc
    if not 200 <= resp.status_code < 300:
        raise DeliveryError(f"HTTPS {url}: status {resp.status_code}")


def _tls_context(settings: DeliverySettings) -> ssl.SSLContext:
    """Web PKI like any HTTPS client, or no check at all when the operator turned it off."""
    if not settings.https_verify:
        return client_context(Verify.NOTHING)
    return client_context(Verify.CHAIN_AND_NAME, ca_file=settings.https_ca_file)


class NetworkTransport:
    """Mail via the relay (DKIM-signed), HTTPS via httpx."""

    def __init__(
        self,
        settings: DeliverySettings,
        dkim: DkimSettings,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.dkim = dkim
        self._clock = clock

    def render_mail(self, doc: ReportDocument, rcpt: str, stamp: Stamp | None = None) -> bytes:
        """The exact bytes that would be submitted (also used by `report send --outbox`).

        With a `stamp` the bytes are fixed: its Date, a Message-ID from the report, and its
        DKIM header if it has one (else the message is signed now)."""
        msg = self._unsigned(doc, rcpt, stamp)
        if stamp is not None and stamp.dkim_signature is not None:
            return stamp.dkim_signature + msg
        return self._signed(doc, msg)

    def stamp(self, doc: ReportDocument, dest: RuaDestination, date: float) -> Stamp:
        """Fix the mail for `dest` now (signed once); HTTPS bodies are fixed bytes already."""
        if dest.kind == "https":
            return Stamp(date)
        msg = self._unsigned(doc, dest.target, Stamp(date))
        return Stamp(date, signature_header(self._signed(doc, msg), msg) or None)

    def _unsigned(self, doc: ReportDocument, rcpt: str, stamp: Stamp | None) -> bytes:
        if stamp is None:
            now = self._clock() if self._clock else datetime.now(UTC).timestamp()
            message_id = message_id_for(doc, rcpt, secrets.token_hex(8))
        else:
            now, message_id = stamp.date, stable_message_id(doc, rcpt)
        return build_message(
            doc,
            from_addr=self.settings.header_from,
            to_addr=rcpt,
            date=datetime.fromtimestamp(now, UTC),
            message_id=message_id,
        )

    def _signed(self, doc: ReportDocument, msg: bytes) -> bytes:
        key = load_dkim_key(self.dkim)
        if key is None:
            log.warning(
                "event=tlsrpt-report-unsigned report_id=%s reason=allow_unsigned", doc.report_id
            )
            return msg
        try:
            return sign_message(msg, self.dkim, key)
        except Exception as exc:  # dkimpy raises its own types (bad key, parse errors)
            raise DeliveryError(f"DKIM signing failed: {exc}", temporary=False) from exc

    async def deliver(
        self, doc: ReportDocument, dest: RuaDestination, stamp: Stamp | None = None
    ) -> None:
        if dest.kind == "https":
            await https_post(doc.gzip_bytes(), dest.target, self.settings)
            return
        message = self.render_mail(doc, dest.target, stamp)
        await asyncio.to_thread(
            smtp_submit, message, self.settings.envelope_sender, dest.target, self.settings
        )
