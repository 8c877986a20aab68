"""TLS side of the MX probe: OpenSSL verify-error classification, certificate names.

Chain and expiry are judged by OpenSSL (the context comes from net/tls.py, like the policy
fetch's), so the probe agrees with what Postfix (also OpenSSL) would decide. Host names are
judged here, by RFC 8461 §4.2 rules (DNS-ID in the SAN only, wildcard only as the whole
left-most label), because OpenSSL's own host check falls back to the subject CN and accepts
partial wildcards.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.probe.cert_names import matches_host

__all__ = ["matches_host"]  # re-exported: the prober and its tests import it from here

# OpenSSL X509_V_ERR_* codes that RFC 8460 §4.3.1 gives their own result type.
_CERT_HAS_EXPIRED = 10
_HOST_MISMATCH_CODES = frozenset({62, 63, 64})  # HOSTNAME / EMAIL / IP_ADDRESS_MISMATCH

_MAX_REASON_CODE = 120
"""RFC 8460 §7: keep failure-reason-code short."""


def short_code(text: str) -> str:
    """A failure-reason-code: one line, bounded length (report content is untrusted input)."""
    flat = " ".join(text.split())
    return flat[:_MAX_REASON_CODE]


def classify_verify_error(err: ssl.SSLCertVerificationError) -> tuple[ResultType, str]:
    """Map OpenSSL's verify result to an RFC 8460 result type and a reason code.

    OpenSSL builds the chain before it checks validity dates, so an expired self-signed
    certificate is reported as not trusted: trust is the more fundamental failure.
    """
    code = int(getattr(err, "verify_code", 0) or 0)
    message = str(getattr(err, "verify_message", "") or err.reason or "verification failed")
    if code == _CERT_HAS_EXPIRED:
        return ResultType.CERTIFICATE_EXPIRED, short_code(message)
    if code in _HOST_MISMATCH_CODES:
        return ResultType.CERTIFICATE_HOST_MISMATCH, short_code(message)
    return ResultType.CERTIFICATE_NOT_TRUSTED, short_code(message)


def handshake_error_code(err: ssl.SSLError) -> str:
    """Reason code for a non-certificate handshake failure (alert, protocol version, plain text)."""
    reason = err.reason or type(err).__name__
    return short_code(f"tls-handshake-failed: {reason}")


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the probe reports about the MX's leaf certificate."""

    dns_names: tuple[str, ...]
    """SAN dNSName entries, lower case, in certificate order."""
    common_name: str | None
    not_after: datetime
    """UTC, timezone-aware."""


def describe_certificate(der: bytes | None, decoded: dict[str, Any]) -> CertInfo | None:
    """The leaf's names and expiry: parsed with cryptography, else OpenSSL's own decoding.

    cryptography's parser is stricter than OpenSSL's; a certificate OpenSSL verified but
    cryptography refuses must not turn into a reported failure, so `decoded` (what
    `getpeercert()` returned; empty when the chain was not verified) is the fallback.
    """
    if der:
        with contextlib.suppress(ValueError):
            return inspect_certificate(der)
    if not decoded:
        return None
    names = tuple(
        str(value).lower() for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"
    )
    cn = next(
        (str(v) for rdn in decoded.get("subject", ()) for k, v in rdn if k == "commonName"), None
    )
    seconds = ssl.cert_time_to_seconds(str(decoded["notAfter"]))
    return CertInfo(names, cn, datetime.fromtimestamp(seconds, UTC))


def inspect_certificate(der: bytes) -> CertInfo:
    """Parse the DER leaf certificate the MX presented; ValueError if cryptography cannot."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else None
    return CertInfo(
        dns_names=names,
        common_name=cn if isinstance(cn, str) else None,
        not_after=cert.not_valid_after_utc,
    )


def host_mismatch_reason(info: CertInfo, host: str) -> str:
    """Human explanation of a certificate-host-mismatch, naming what the certificate covers."""
    if not info.dns_names:
        cn = f" (subject CN {info.common_name!r} is not used)" if info.common_name else ""
        return f"certificate has no DNS subject alternative name{cn}; MX host {host}"
    shown = ", ".join(info.dns_names[:5]) + (", ..." if len(info.dns_names) > 5 else "")
    return f"certificate names [{shown}] do not cover MX host {host}"
