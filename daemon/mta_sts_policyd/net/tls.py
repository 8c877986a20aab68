"""The one builder of TLS client contexts: policy fetch, MX probe and TLS-RPT HTTPS delivery.

One place decides the trust store (the platform's, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured, or
an explicit CA file), the lowest protocol version and whether a subject CN may stand in for a
DNS name, so the probe judges a chain exactly as the policy fetch does (RFC 8461 §3.3, §4.2).
An unusable CA file becomes ConfigError here, once, instead of an ssl/OSError at first use.
"""

from __future__ import annotations

import ssl
from enum import Enum

from mta_sts_policyd.errors import ConfigError


class Verify(Enum):
    """How much of the server's certificate the handshake itself checks."""

    CHAIN_AND_NAME = "chain-and-name"
    """Web PKI: chain, expiry and host name (DNS-ID in the SAN; no CN fallback by default)."""
    CHAIN = "chain"
    """Chain and expiry only; the caller judges the names (the probe, by RFC 8461 §4.2 rules)."""
    NOTHING = "nothing"
    """Accept any certificate: only to read one that failed, or where the operator said so."""


def client_context(
    verify: Verify = Verify.CHAIN_AND_NAME,
    *,
    ca_file: str | None = None,
    minimum_version: ssl.TLSVersion | None = ssl.TLSVersion.TLSv1_2,
) -> ssl.SSLContext:
    """A client context; `ca_file` replaces the platform trust store (empty means none given).

    `minimum_version=None` keeps OpenSSL's own floor: a context that only reads a certificate
    must still reach servers too old for the verified connection.
    """
    if verify is Verify.NOTHING:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no trust store loaded: nothing is verified
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        try:
            ctx = ssl.create_default_context(cafile=ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"CA file {ca_file!r} is unusable: {exc}") from None
        ctx.hostname_checks_common_name = False
        if verify is Verify.CHAIN:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_REQUIRED
    if minimum_version is not None:
        ctx.minimum_version = minimum_version
    return ctx
