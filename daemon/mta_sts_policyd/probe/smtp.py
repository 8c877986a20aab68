"""One SMTP session of the MX probe: banner, EHLO, STARTTLS, TLS handshake, QUIT.

Network failures that RFC 8460 §4.3.4 lets a reporter ignore (timeouts, refused connections,
4xx greetings) come back with `result_type=None`; everything the receiving side decided
(no STARTTLS, handshake or certificate failures) comes back with an RFC 8460 result type.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TypeVar

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.probe.tls import (
    CertInfo,
    classify_verify_error,
    describe_certificate,
    handshake_error_code,
    short_code,
)

_T = TypeVar("_T")
_MAX_LINE = 4096
_MAX_LINES = 200
_QUIT_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Session:
    """What one session found out. `cert` describes the MX's leaf, when TLS was up."""

    ok: bool
    result_type: ResultType | None
    reason: str
    failure_reason_code: str | None = None
    tls_version: str | None = None
    cert: CertInfo | None = None
    receiving_helo: str | None = None
    connected: bool = True
    """False when no TCP connection was made (the prober then tries the next address)."""


class _Stop(Exception):
    """Ends the session early with a finished verdict."""

    def __init__(self, session: Session, *, can_quit: bool = True) -> None:
        super().__init__(session.reason)
        self.session = session
        self.can_quit = can_quit
        """False when the connection timed out or broke: sending QUIT would only wait."""


def _transient(reason: str, *, can_quit: bool = True) -> _Stop:
    return _Stop(Session(ok=False, result_type=None, reason=reason), can_quit=can_quit)


def _failure(result_type: ResultType, reason: str, code: str, helo: str | None) -> _Stop:
    return _Stop(Session(False, result_type, reason, failure_reason_code=code, receiving_helo=helo))


async def _step(what: str, step_timeout: float, aw: Awaitable[_T]) -> _T:
    """Await one protocol step; a timeout or lost connection is transient (RFC 8460 §4.3.4)."""
    try:
        return await asyncio.wait_for(aw, step_timeout)
    except TimeoutError:
        raise _transient(f"timeout {what}", can_quit=False) from None
    except asyncio.IncompleteReadError:
        raise _transient(f"connection closed by the server {what}", can_quit=False) from None
    except asyncio.LimitOverrunError:
        raise _transient(f"SMTP line too long {what}", can_quit=False) from None
    except OSError as err:
        raise _transient(f"{what} failed: {err}", can_quit=False) from None


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, list[str]]:
    """One (possibly multi-line) SMTP reply: its code and the text of each line."""
    lines: list[str] = []
    while len(lines) < _MAX_LINES:
        raw = await reader.readuntil(b"\n")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
            raise _transient(f"malformed SMTP reply: {short_code(line)!r}")
        lines.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), lines
    raise _transient("SMTP reply too long")


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cmd: str, step_timeout: float
) -> tuple[int, list[str]]:
    writer.write(cmd.encode("ascii") + b"\r\n")
    verb = cmd.split(" ", 1)[0]
    await _step(f"sending {verb}", step_timeout, writer.drain())
    return await _step(f"waiting for reply to {verb}", step_timeout, _read_reply(reader))


async def _greet(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ehlo_name: str, step_timeout: float
) -> str | None:
    """Banner and EHLO; returns the MX's EHLO name once STARTTLS is known to be offered."""
    code, text = await _step("waiting for banner", step_timeout, _read_reply(reader))
    if code != 220:
        raise _transient(f"banner refused: {code} {short_code(' '.join(text))}")
    code, text = await _command(reader, writer, f"EHLO {ehlo_name}", step_timeout)
    helo = (text[0].split(" ", 1)[0] or None) if text else None
    if code != 250:
        if 400 <= code < 500:
            raise _transient(f"EHLO deferred: {code} {short_code(' '.join(text))}")
        reason = f"EHLO rejected: {code} {short_code(' '.join(text))}"
        raise _failure(ResultType.STARTTLS_NOT_SUPPORTED, reason, "ehlo-rejected", helo)
    keywords = {line.split(" ", 1)[0].upper() for line in text[1:]}
    if "STARTTLS" not in keywords:
        reason = "STARTTLS not offered in the EHLO reply"
        raise _failure(ResultType.STARTTLS_NOT_SUPPORTED, reason, "starttls-not-offered", helo)
    code, text = await _command(reader, writer, "STARTTLS", step_timeout)
    if code != 220:
        reason = f"STARTTLS refused: {code} {short_code(' '.join(text))}"
        raise _failure(ResultType.STARTTLS_NOT_SUPPORTED, reason, "starttls-refused", helo)
    return helo


async def _handshake(
    writer: asyncio.StreamWriter,
    ctx: ssl.SSLContext,
    host: str,
    helo: str | None,
    step_timeout: float,
) -> None:
    """TLS with SNI = MX host name (RFC 8461 §7.1); maps ssl errors to RFC 8460 types."""
    try:
        # Our own deadline: asyncio's handshake timeout surfaces as ConnectionAbortedError,
        # which would be indistinguishable from the server hanging up.
        await asyncio.wait_for(
            writer.start_tls(ctx, server_hostname=host, ssl_handshake_timeout=step_timeout * 2 + 1),
            step_timeout,
        )
    except ssl.SSLCertVerificationError as err:
        result_type, code = classify_verify_error(err)
        raise _failure(
            result_type, f"certificate verification failed: {code}", code, helo
        ) from None
    except ssl.SSLError as err:
        code = handshake_error_code(err)
        raise _failure(ResultType.VALIDATION_FAILURE, code, code, helo) from None
    except TimeoutError:
        raise _transient("timeout in TLS handshake") from None
    except (OSError, asyncio.IncompleteReadError) as err:
        code = "tls-handshake-failed: connection closed by server"
        detail = f"{code} ({err or type(err).__name__})"
        raise _failure(ResultType.VALIDATION_FAILURE, detail, code, helo) from None


async def _quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """End the session politely; the MX's answer does not matter."""
    with contextlib.suppress(Exception):
        writer.write(b"QUIT\r\n")
        await asyncio.wait_for(writer.drain(), _QUIT_TIMEOUT)
        await asyncio.wait_for(_read_reply(reader), _QUIT_TIMEOUT)


async def _close(writer: asyncio.StreamWriter) -> None:
    if writer.transport.is_closing():
        return  # aborted after a failed handshake
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), _QUIT_TIMEOUT)


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    host: str,
    ctx: ssl.SSLContext,
    ehlo_name: str,
    step_timeout: float,
) -> Session:
    try:
        helo = await _greet(reader, writer, ehlo_name, step_timeout)
    except _Stop as stop:
        if stop.can_quit:
            await _quit(reader, writer)
        return stop.session
    try:
        await _handshake(writer, ctx, host, helo, step_timeout)
    except _Stop as stop:
        # The TLS layer is broken: nothing polite left to say, and no close to wait for
        # (the stream never saw the connection made, so wait_closed would only time out).
        writer.transport.abort()
        return stop.session
    tls = writer.get_extra_info("ssl_object")
    cert, version = None, None
    if isinstance(tls, ssl.SSLObject):
        cert = describe_certificate(tls.getpeercert(binary_form=True), tls.getpeercert() or {})
        version = tls.version()
    await _quit(reader, writer)
    return Session(True, None, "TLS established", None, version, cert, helo)


async def run_session(
    *, host: str, address: str, port: int, ctx: ssl.SSLContext, ehlo_name: str, step_timeout: float
) -> Session:
    """Connect to `address`, upgrade with STARTTLS and report what happened."""
    try:
        reader, writer = await _step(
            f"connecting to {address} port {port}",
            step_timeout,
            asyncio.open_connection(address, port, limit=_MAX_LINE),
        )
    except _Stop as stop:
        return replace(stop.session, connected=False)
    try:
        return await _converse(
            reader, writer, host=host, ctx=ctx, ehlo_name=ehlo_name, step_timeout=step_timeout
        )
    except _Stop as stop:
        return stop.session
    finally:
        await _close(writer)
