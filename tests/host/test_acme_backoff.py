"""ACME back-off: the CA's Retry-After (RFC 8555 §6.6) and its server errors.

pebble cannot be made to rate-limit (its 2.4.0 has no such switch), so a small ACME server on
loopback plays the CA that refuses: it serves the directory and nonces like any CA and answers
the account request with a problem document (`rateLimited` with Retry-After, or a 503
`serverInternal`). The host's real issuer talks to it through certbot's `acme` library.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.host.acme_issuer import AcmeFailure, AcmeIssuer, retry_after_seconds
from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE, CertificateSet
from mta_sts_policyd.host.renewal import (
    BACKOFF_JITTER,
    FIRST_BACKOFF,
    MAX_RETRY_AFTER,
    Renewal,
    retry_delay,
)

NAME = "mta-sts.a.test"
RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"


@given(
    st.integers(min_value=1, max_value=10**6),
    st.none() | st.floats(min_value=0, max_value=10**8),
    st.floats(min_value=0, max_value=0.999),
)
def test_the_next_attempt_is_never_before_retry_after_nor_the_backoff(
    backoff_s: int, retry_after: float | None, rand: float
) -> None:
    backoff = timedelta(seconds=backoff_s)
    delay = retry_delay(backoff, retry_after, rand)
    assert delay >= backoff
    if retry_after is None:
        assert delay <= backoff * (1 + BACKOFF_JITTER)
    else:
        assert delay >= min(timedelta(seconds=retry_after), MAX_RETRY_AFTER)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    later = format_datetime(now + timedelta(hours=2), usegmt=True)
    assert retry_after_seconds(later, now) == 7200.0
    assert retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


class RefusingCa:
    """An ACME directory whose account endpoint refuses with a chosen problem."""

    def __init__(self) -> None:
        self.status = 429
        self.problem = RATE_LIMITED
        self.retry_after: str | None = "3600"
        self.requests = 0
        ca = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _nonce(self) -> None:
                nonce = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
                self.send_header("Replay-Nonce", nonce)
                self.send_header("Cache-Control", "no-store")

            def do_HEAD(self) -> None:
                self.send_response(200)
                self._nonce()
                self.end_headers()

            def do_GET(self) -> None:
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                names = ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange")
                body = json.dumps({k: f"{base}/{k}" for k in names}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ca.requests += 1
                body = json.dumps({"type": ca.problem, "detail": "refused by the test CA"})
                self.send_response(ca.status)
                self._nonce()
                self.send_header("Content-Type", "application/problem+json")
                if ca.retry_after is not None:
                    self.send_header("Retry-After", ca.retry_after)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.directory = f"http://127.0.0.1:{self.server.server_address[1]}/dir"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def refusing_ca() -> Iterator[RefusingCa]:
    ca = RefusingCa()
    yield ca
    ca.close()


def in_use(root: Path, ca: trustme.CA) -> CertificateSet:
    """A certificate 60 of 90 days old: due for renewal, still valid, serving."""
    now = datetime.now(UTC)
    leaf = ca.issue_cert(
        NAME, not_before=now - timedelta(days=61), not_after=now + timedelta(days=29)
    )
    folder = root / "certs" / NAME
    folder.mkdir(parents=True)
    (folder / CHAIN_FILE).write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (folder / KEY_FILE).write_bytes(leaf.private_key_pem.bytes())
    certificates = CertificateSet((root / "certs",))
    certificates.reload()
    return certificates


async def test_a_rate_limited_renewal_waits_for_retry_after_and_the_old_certificate_serves(
    tmp_path: Path, refusing_ca: RefusingCa, trust_ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    certificates = in_use(tmp_path, trust_ca)
    before = certificates.validity(NAME)
    issuer = AcmeIssuer(refusing_ca.directory, tmp_path / "acme")
    now = datetime.now(UTC)
    renewal = Renewal(issuer, certificates, (NAME,), clock=lambda: now, rand=lambda: 0.5)
    assert renewal.due(NAME, now)

    with pytest.raises(AcmeFailure) as refused:
        issuer.issue(NAME)
    assert (refused.value.problem, refused.value.retry_after) == (RATE_LIMITED, 3600.0)

    await renewal.once()
    assert renewal.next_attempt(NAME) == now + timedelta(hours=1)  # not the 5-minute back-off
    assert not renewal.due(NAME, now + timedelta(minutes=59))
    assert certificates.validity(NAME) == before  # the certificate in use keeps serving
    assert certificates.context_for(NAME) is not None
    assert "problem=rateLimited" in caplog.text and "retry_after=3600s" in caplog.text
    asked = refusing_ca.requests
    await renewal.once()  # within the wait: the CA is not asked
    assert refusing_ca.requests == asked


async def test_server_errors_back_off_exponentially_with_jitter(
    tmp_path: Path, refusing_ca: RefusingCa, trust_ca: trustme.CA
) -> None:
    refusing_ca.status, refusing_ca.problem = 503, "urn:ietf:params:acme:error:serverInternal"
    refusing_ca.retry_after = None
    certificates = in_use(tmp_path, trust_ca)
    clock = [datetime.now(UTC)]
    renewal = Renewal(AcmeIssuer(refusing_ca.directory, tmp_path / "acme"), certificates,
                      (NAME,), clock=lambda: clock[0], rand=lambda: 0.4)  # fmt: skip
    waits = []
    for _ in range(3):
        await renewal.once()
        attempt = renewal.next_attempt(NAME)
        assert attempt is not None
        waits.append(attempt - clock[0])
        clock[0] = attempt
    stretch = 1 + BACKOFF_JITTER * 0.4
    assert waits == [FIRST_BACKOFF * stretch, FIRST_BACKOFF * 2 * stretch,
                     FIRST_BACKOFF * 4 * stretch]  # fmt: skip
    # a Retry-After shorter than the back-off does not shorten it
    refusing_ca.retry_after = "1"
    await renewal.once()
    attempt = renewal.next_attempt(NAME)
    assert attempt is not None and attempt - clock[0] == FIRST_BACKOFF * 8 * stretch
