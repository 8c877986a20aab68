"""Leaf certificates for the test HTTPS server, including the broken kinds RFC 8461 §3.3 rejects.

trustme issues the good ones' CA; the leaves are built here with `cryptography` so that the bad
kinds (CN only, expired, self-signed, foreign CA, partial wildcard) are possible too. One EC key
is shared by all leaves: signing is then cheap enough for benchmarks with many host names.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from pathlib import Path
from typing import Literal

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CertKind = Literal[
    "valid", "wildcard", "wrong-name", "expired", "self-signed", "untrusted", "cn-only", "none"
]
"""valid: SAN = the host; wildcard: SAN = *.<parent>; wrong-name: SAN = <parent> only (RFC 8461
§3.3); expired; self-signed; untrusted: issued by a CA the client does not trust; cn-only: CN =
host, no SAN; none: the server aborts the handshake (TLS alert unrecognized_name)."""

_DAY = datetime.timedelta(days=1)
_MAX_CONTEXTS = 4096
"""Bound on cached server contexts (benchmarks with 100k host names)."""


def parent(host: str) -> str:
    return host.split(".", 1)[1] if "." in host else host


class CertFactory:
    """Makes and caches server-side SSLContexts per (kind, names)."""

    def __init__(
        self,
        ca: trustme.CA,
        workdir: Path,
        tls_versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
    ) -> None:
        self.ca = ca
        self.tls_versions = tls_versions
        self.workdir = workdir
        self._ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
        self._ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._foreign_key = ec.generate_private_key(ec.SECP256R1())
        self._key_path = workdir / "leaf.key"
        self._key_path.write_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self._contexts: dict[tuple[str, tuple[str, ...]], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def names_for(self, kind: CertKind, host: str) -> tuple[str, ...]:
        if kind == "wildcard":
            return (f"*.{parent(host)}",)
        if kind == "wrong-name":
            return (parent(host),)
        return (host,)

    def context(self, kind: CertKind, names: tuple[str, ...]) -> ssl.SSLContext:
        key = (kind, names)
        with self._lock:
            ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        ctx = self.new_context()
        path = self.workdir / f"{threading.get_ident()}-{id(ctx)}.pem"
        path.write_bytes(self.chain_pem(kind, names))
        try:
            ctx.load_cert_chain(path, self._key_path)  # ssl only loads chains from files
        finally:
            path.unlink()
        with self._lock:
            if len(self._contexts) >= _MAX_CONTEXTS:
                self._contexts.clear()
            self._contexts[key] = ctx
        return ctx

    def new_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.tls_versions is not None:
            ctx.minimum_version, ctx.maximum_version = self.tls_versions
        return ctx

    def chain_pem(self, kind: CertKind, names: tuple[str, ...]) -> bytes:
        """The leaf certificate (PEM); the CA is not sent, clients have it as a trust anchor."""
        now = datetime.datetime.now(datetime.UTC)
        not_before, not_after = now - _DAY, now + 30 * _DAY
        if kind == "expired":
            not_before, not_after = now - 30 * _DAY, now - _DAY
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        issuer, signer = self._ca_cert.subject, self._ca_key
        if kind == "self-signed":
            issuer, signer = subject, self._key
        elif kind == "untrusted":
            issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Untrusted test CA")])
            signer = self._foreign_key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        if kind != "self-signed":
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        if kind != "cn-only":
            san = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
            builder = builder.add_extension(san, critical=False)
        cert = builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]
        return cert.public_bytes(serialization.Encoding.PEM)
