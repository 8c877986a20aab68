"""The ClientHello ALPN reader, and the host answering a pending tls-alpn-01 challenge only to
handshakes that offer acme-tls/1 (a sender fetching meanwhile gets the real certificate)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.host.acme_issuer import ACME_IDENTIFIER_OID, validation_context
from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE
from mta_sts_policyd.host.client_hello import offers_alpn
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.host.run import HostSettings, PolicyHost
from support.ports import free_port

NAME = "mta-sts.a.test"
POLICY = b"version: STSv1\nmode: testing\nmx: mx.a.test\nmax_age: 86400\n"


def hello(extensions: bytes) -> bytes:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += len(extensions).to_bytes(2, "big") + extensions
    return b"\x01" + len(body).to_bytes(3, "big") + body


def alpn(*names: bytes) -> bytes:
    listed = b"".join(bytes([len(n)]) + n for n in names)
    data = len(listed).to_bytes(2, "big") + listed
    return b"\x00\x10" + len(data).to_bytes(2, "big") + data


def test_the_alpn_list_is_read_from_its_extension_only() -> None:
    sni = b"\x00\x00\x00\x05" + b"\x00\x03\x00\x00\x00"
    assert offers_alpn(hello(sni + alpn(b"h2", b"acme-tls/1")), b"acme-tls/1")
    assert not offers_alpn(hello(sni + alpn(b"h2", b"http/1.1")), b"acme-tls/1")
    assert not offers_alpn(hello(b"\x00\x2a\x00\x0b\x0aacme-tls/1"), b"acme-tls/1")  # other ext
    assert not offers_alpn(hello(b""), b"acme-tls/1")
    assert not offers_alpn(b"\x02" + hello(alpn(b"acme-tls/1"))[1:], b"acme-tls/1")


@given(st.binary(max_size=600))
def test_any_bytes_give_an_answer_never_an_exception(data: bytes) -> None:
    assert offers_alpn(data, b"acme-tls/1") in (True, False)


WHOLE = hello(alpn(b"acme-tls/1"))


@given(st.integers(min_value=0, max_value=len(WHOLE) - 1))
def test_a_truncated_hello_offers_nothing(cut: int) -> None:
    assert not offers_alpn(WHOLE[:cut], b"acme-tls/1")


@pytest.fixture
async def challenged(tmp_path: Path, trust_ca: trustme.CA) -> AsyncIterator[int]:
    """A host with a certificate for NAME and, at the same time, a pending challenge for it."""
    policy = tmp_path / "policies" / "a.test" / POLICY_FILE
    policy.parent.mkdir(parents=True)
    policy.write_bytes(POLICY)
    leaf = trust_ca.issue_cert(NAME)
    (tmp_path / "certs" / NAME).mkdir(parents=True)
    leaf.private_key_pem.write_to_path(str(tmp_path / "certs" / NAME / KEY_FILE))
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    (tmp_path / "certs" / NAME / CHAIN_FILE).write_bytes(chain)
    port = free_port()
    settings = HostSettings((("127.0.0.1", port),), tmp_path / "policies", (tmp_path / "certs",))
    pending = validation_context(NAME, bytes(range(32)))
    host = PolicyHost(settings, challenges=lambda name: pending if name == NAME else None)
    task = asyncio.create_task(host.serve())
    for _ in range(100):
        try:
            await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.02)
    yield port
    host.stop()
    await task


async def peer_certificate(port: int, protocols: list[str]) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(protocols)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=NAME)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


async def test_only_an_acme_tls_handshake_gets_the_validation_certificate(
    challenged: int,
) -> None:
    validator = await peer_certificate(challenged, ["acme-tls/1"])
    ext = validator.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert ext.critical and ext.value.value == b"\x04\x20" + bytes(range(32))  # type: ignore[attr-defined]
    for protocols in (["http/1.1"], []):
        sender = await peer_certificate(challenged, protocols)
        with pytest.raises(x509.ExtensionNotFound):
            sender.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        assert sender.issuer != sender.subject  # the CA-issued one, not the self-signed one
