"""The one TLS client-context builder, judged by real handshakes against a loopback server."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.net.tls import Verify, client_context
from support.certs import CertFactory, CertKind

HOST = "mta-sts.example.test"


@pytest.fixture
def ca_file(trust_ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    trust_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def certs(trust_ca: trustme.CA, tmp_path: Path) -> AsyncIterator[CertFactory]:
    yield CertFactory(trust_ca, tmp_path)


async def handshake(certs: CertFactory, kind: CertKind, ctx: ssl.SSLContext) -> None:
    """One TLS handshake as HOST against a server presenting a `kind` certificate."""
    server_ctx = certs.context(kind, certs.names_for(kind, HOST))

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=HOST), 5
        )
        writer.close()
    finally:
        server.close()


async def test_chain_and_name_is_web_pki_rfc8461_3_3(certs: CertFactory, ca_file: str) -> None:
    ctx = client_context(ca_file=ca_file)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    await handshake(certs, "valid", ctx)
    await handshake(certs, "wildcard", ctx)
    for kind in ("wrong-name", "cn-only", "expired", "untrusted", "self-signed"):
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(certs, kind, ctx)  # type: ignore[arg-type]


async def test_chain_leaves_the_names_to_the_caller(certs: CertFactory, ca_file: str) -> None:
    """The probe judges names itself (RFC 8461 §4.2); chain and expiry stay OpenSSL's."""
    ctx = client_context(Verify.CHAIN, ca_file=ca_file)
    await handshake(certs, "wrong-name", ctx)
    await handshake(certs, "cn-only", ctx)
    for kind in ("expired", "untrusted", "self-signed"):
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(certs, kind, ctx)  # type: ignore[arg-type]


async def test_nothing_accepts_any_certificate(certs: CertFactory) -> None:
    ctx = client_context(Verify.NOTHING, minimum_version=None)
    assert ctx.get_ca_certs() == []  # no trust store loaded: nothing to verify against
    for kind in ("expired", "untrusted", "self-signed", "wrong-name"):
        await handshake(certs, kind, ctx)  # type: ignore[arg-type]


async def test_platform_store_does_not_trust_the_test_ca(certs: CertFactory) -> None:
    """Without ca_file the platform trust store is used, so a private CA is not trusted."""
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(certs, "valid", client_context())


@pytest.mark.parametrize("verify", [Verify.CHAIN_AND_NAME, Verify.CHAIN])
def test_unusable_ca_file_is_a_config_error_naming_it(tmp_path: Path, verify: Verify) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("not a certificate\n")
    for path in (bad, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError, match=f"CA file '{path}' is unusable"):
            client_context(verify, ca_file=str(path))
