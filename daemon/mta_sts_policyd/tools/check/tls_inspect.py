"""One TLS handshake to one address, to describe its certificate (for the policy host and
TLS-RPT https: endpoints): chain and dates judged by OpenSSL with the sender's trust store,
the certificate read even when it fails, names judged later by RFC 8461 §4.2 rules."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from mta_sts_policyd.net.tls import Verify, client_context
from mta_sts_policyd.probe.tls import classify_verify_error, describe_certificate
from mta_sts_policyd.tools.check.observations import CertSeen


def _verifying(ca_file: str | None) -> ssl.SSLContext:
    """The probe's context: chain and dates by OpenSSL, names judged afterwards."""
    return client_context(Verify.CHAIN, ca_file=ca_file)


def _peeking() -> ssl.SSLContext:
    """Reads a certificate that failed, from servers of any TLS version."""
    return client_context(Verify.NOTHING, minimum_version=None)


@dataclass(frozen=True)
class TlsSeen:
    connect_error: str | None = None
    tls_error: str | None = None
    cert: CertSeen | None = None
    version: str | None = None


async def inspect_tls(
    address: str, port: int, host: str, ca_file: str | None, seconds: float
) -> TlsSeen:
    """Handshake with SNI `host`; on a verification failure, a second one to read the cert."""
    try:
        cert, version = await _handshake(address, port, host, _verifying(ca_file), seconds)
    except ssl.SSLCertVerificationError as err:
        result_type, reason = classify_verify_error(err)
        try:
            cert, version = await _handshake(address, port, host, _peeking(), seconds)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            return TlsSeen(tls_error=f"certificate refused ({reason}); unreadable: {exc}")
        if cert is None:
            return TlsSeen(tls_error=f"certificate refused: {reason}")
        return TlsSeen(
            cert=CertSeen(cert.names, cert.not_after, result_type, reason), version=version
        )
    except ssl.SSLError as err:
        return TlsSeen(tls_error=f"TLS handshake failed: {err.reason or err}")
    except TimeoutError:
        return TlsSeen(connect_error=f"{address} port {port}: timed out after {seconds:g} s")
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as err:
        # A refused SYN is ConnectionRefusedError: these come after the TCP connection was made.
        why = _reason(err)
        return TlsSeen(tls_error=f"TLS handshake failed: the server closed the connection ({why})")
    except OSError as err:
        return TlsSeen(connect_error=f"{address} port {port}: {_reason(err)}")
    return TlsSeen(cert=cert, version=version)


def _reason(err: OSError) -> str:
    """Never empty: a reset from asyncio may carry neither strerror nor a message."""
    return err.strerror or str(err) or type(err).__name__


async def _handshake(
    address: str, port: int, host: str, ctx: ssl.SSLContext, seconds: float
) -> tuple[CertSeen | None, str | None]:
    async with asyncio.timeout(seconds):
        _reader, writer = await asyncio.open_connection(
            address, port, ssl=ctx, server_hostname=host, ssl_handshake_timeout=seconds
        )
    try:
        tls = writer.get_extra_info("ssl_object")
        if not isinstance(tls, ssl.SSLObject):
            return None, None
        info = describe_certificate(tls.getpeercert(binary_form=True), tls.getpeercert() or {})
        cert = CertSeen(info.dns_names, info.not_after) if info else None
        return cert, tls.version()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(1):
                await writer.wait_closed()
