"""Report mail and HTTPS delivery (RFC 8460 §3, §5.2-§5.6)."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import dkim
import pytest
import trustme

from mta_sts_policyd.tlsrpt.deliver import (
    DeliveryError,
    DeliverySettings,
    NetworkTransport,
    https_post,
    load_dkim_key,
)
from mta_sts_policyd.tlsrpt.message import DkimSettings, build_message, sign_message
from mta_sts_policyd.tlsrpt.model import DomainDay, PolicyAggregate
from mta_sts_policyd.tlsrpt.record import RuaDestination
from mta_sts_policyd.tlsrpt.report import ReportDocument, ReportSettings, build_report
from support import TESTS_DIR
from support.tlsrpt_receivers import DkimKey, HttpsReceiver, SmtpReceiver, make_dkim_key
from support.tlsrpt_validate import STS, parsedmarc_parse, validate_report

DAY = date(2026, 11, 21)
SETTINGS = ReportSettings("Example Sender Org", "tlsrpt@sender.example")
GOLDEN_EML = TESTS_DIR / "golden" / "tlsrpt-message.eml"


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return make_dkim_key()


@pytest.fixture
def doc() -> ReportDocument:
    return build_report(
        DomainDay(DAY, "company-y.example", None, (PolicyAggregate(STS, 2, 0, ()),)), SETTINGS
    )


def dkim_settings(tmp_path: Path, key: DkimKey) -> DkimSettings:
    path = tmp_path / "dkim.pem"
    path.write_bytes(key.pem)
    return DkimSettings("sender.example", "rpt", str(path))


def _message(doc: ReportDocument) -> bytes:
    return build_message(
        doc,
        from_addr="noreply@sender.example",
        to_addr="tlsrpt@company-y.example",
        date=datetime(2026, 11, 22, 1, 2, 3, tzinfo=UTC),
        message_id="<fixed.1@sender.example>",
    )


def test_message_golden_and_structure(doc: ReportDocument) -> None:
    """RFC 8460 §3, §5.3, §5.6: multipart/report, text + application/tlsrpt+gzip, consistent
    names."""
    raw = _message(doc)
    assert raw == GOLDEN_EML.read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    text, attachment = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert "aggregate TLS report from Example Sender Org" in text.get_content()
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert attachment.get_filename() == doc.filename
    body = attachment.get_content()
    assert body[:2] == b"\x1f\x8b"
    report = json.loads(gzip.decompress(body))
    validate_report(report)
    assert msg["TLS-Report-Domain"] == "company-y.example"
    assert msg["TLS-Report-Submitter"] == report["contact-info"].split("@")[1]  # RFC 8460 §5.3
    assert msg["TLS-Required"] == "No" and msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"] and msg["Message-ID"] == "<fixed.1@sender.example>"
    rid = re.search(r"Report-ID: <([^>]+)>", str(msg["Subject"]))
    assert rid is not None and rid.group(1) == report["report-id"]
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize("mode", [True, "strict"])
def test_dkim_signature_verifies_and_covers_tls_headers(
    doc: ReportDocument, key: DkimKey, tmp_path: Path, mode: object
) -> None:
    """RFC 8460 §3: valid signature by the reporting domain, no l=, TLS-Report-* in h=."""
    signed = sign_message(_message(doc), dkim_settings(tmp_path, key), key.pem)
    assert dkim.verify(signed, dnsfunc=key.dnsfunc("rpt", "sender.example"), tlsrpt=mode)
    header = email.message_from_bytes(signed)["DKIM-Signature"]
    tags = dict(t.strip().split("=", 1) for t in "".join(header.split()).split(";") if t)
    assert "l" not in tags
    assert tags["d"] == "sender.example"
    signed_headers = tags["h"].lower().split(":")
    assert {"tls-report-domain", "tls-report-submitter", "subject", "from"} <= set(signed_headers)
    tampered = signed.replace(
        b"TLS-Report-Domain: company-y.example", b"TLS-Report-Domain: evil.example"
    )
    assert not dkim.verify(tampered, dnsfunc=key.dnsfunc("rpt", "sender.example"), tlsrpt=mode)


def test_a_stamped_mail_is_the_same_bytes_every_time(
    doc: ReportDocument, key: DkimKey, tmp_path: Path
) -> None:
    """Fleet mode re-sends after a crash: the stamp (Date, DKIM header made once) and a
    Message-ID from the report make the same bytes, and the signature still verifies."""
    transport = NetworkTransport(_delivery(25), dkim_settings(tmp_path, key))
    dest = RuaDestination("mailto", "tlsrpt@company-y.example")
    stamp = transport.stamp(doc, dest, 1795305600.0)
    first = transport.render_mail(doc, dest.target, stamp)
    assert transport.render_mail(doc, dest.target, stamp) == first
    assert dkim.verify(first, dnsfunc=key.dnsfunc("rpt", "sender.example"), tlsrpt=True)
    msg = email.message_from_bytes(first)
    assert msg["Date"] == "Sun, 22 Nov 2026 00:00:00 +0000"
    assert msg["Message-ID"].startswith(f"<{doc.unique_id}.")
    assert transport.render_mail(doc, dest.target) != first  # without a stamp: a new message
    https = RuaDestination("https", "https://r.company-y.example/x")
    assert transport.stamp(doc, https, 1.0).dkim_signature is None


def test_unsigned_is_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as err:
        load_dkim_key(DkimSettings())
    assert err.value.temporary is False
    assert load_dkim_key(DkimSettings(allow_unsigned=True)) is None
    with pytest.raises(DeliveryError):
        load_dkim_key(DkimSettings("s.example", "sel", str(tmp_path / "missing.pem")))


def test_parsedmarc_parses_the_signed_message(
    doc: ReportDocument, key: DkimKey, tmp_path: Path
) -> None:
    """parsedmarc: parse_report_email(..., offline=True) finds the smtp_tls report."""
    signed = sign_message(_message(doc), dkim_settings(tmp_path, key), key.pem)
    (result,) = parsedmarc_parse([("email", signed)])
    assert result["ok"], result
    assert result["type"] == "smtp_tls"
    assert result["report"]["report_id"] == doc.report_id


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


def _delivery(smtp_port: int = 1, **kw: object) -> DeliverySettings:
    return DeliverySettings(
        envelope_sender="bounces@sender.example",
        from_address="noreply@sender.example",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_timeout=5,
        https_timeout=1.0,
        allow_private_destinations=True,
        **kw,
    )  # type: ignore[arg-type]


async def test_mail_delivery_to_local_relay(
    doc: ReportDocument, key: DkimKey, tmp_path: Path, smtp: SmtpReceiver
) -> None:
    """Explicit envelope sender; the received message is signed and verifies (RFC 8460 §3)."""
    transport = NetworkTransport(
        _delivery(smtp.port), dkim_settings(tmp_path, key), clock=lambda: 1795305600.0
    )
    await transport.deliver(doc, RuaDestination("mailto", "tlsrpt@company-y.example"))
    ((sender, rcpts, data),) = smtp.sink.messages
    assert sender == "bounces@sender.example" and rcpts == ["tlsrpt@company-y.example"]
    assert dkim.verify(data, dnsfunc=key.dnsfunc("rpt", "sender.example"), tlsrpt="strict")
    assert email.message_from_bytes(data)["Date"] == "Sun, 22 Nov 2026 00:00:00 +0000"


async def test_mail_refusals_are_classified(
    doc: ReportDocument, key: DkimKey, tmp_path: Path, smtp: SmtpReceiver
) -> None:
    transport = NetworkTransport(_delivery(smtp.port), dkim_settings(tmp_path, key))
    dest = RuaDestination("mailto", "tlsrpt@company-y.example")
    smtp.sink.reply = "451 4.3.0 try later"
    with pytest.raises(DeliveryError) as err:
        await transport.deliver(doc, dest)
    assert err.value.temporary
    smtp.sink.reply = "554 5.7.1 no"
    with pytest.raises(DeliveryError) as err:
        await transport.deliver(doc, dest)
    assert not err.value.temporary
    closed = NetworkTransport(_delivery(1), dkim_settings(tmp_path, key))
    with pytest.raises(DeliveryError) as err:
        await closed.deliver(doc, dest)
    assert err.value.temporary


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https(ca: trustme.CA) -> Iterator[HttpsReceiver]:
    with HttpsReceiver(ca) as receiver:
        yield receiver


def _ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_https_post_2xx_is_success(
    doc: ReportDocument, ca: trustme.CA, https: HttpsReceiver, tmp_path: Path
) -> None:
    """RFC 8460 §5.2, §5.4: POST, application/tlsrpt+gzip, gzip body."""
    settings = _delivery(https_ca_file=_ca_file(ca, tmp_path))
    await https_post(doc.gzip_bytes(), https.url(), settings)
    (post,) = https.posts
    assert post.path == "/tlsrpt"
    assert post.headers["content-type"] == "application/tlsrpt+gzip"
    assert gzip.decompress(post.body) == doc.json_bytes
    https.mode = "201"
    await https_post(doc.gzip_bytes(), https.url(), settings)


@pytest.mark.parametrize("mode", ["500", "hang"])
async def test_https_500_and_timeout_are_temporary_failures(
    doc: ReportDocument, ca: trustme.CA, https: HttpsReceiver, tmp_path: Path, mode: str
) -> None:
    """RFC 8460 §5.4 (unlike sys4): only 2xx counts; 5xx and timeouts are retried."""
    https.mode = mode
    https.hang_seconds = 2.0
    with pytest.raises(DeliveryError) as err:
        await https_post(
            doc.gzip_bytes(), https.url(), _delivery(https_ca_file=_ca_file(ca, tmp_path))
        )
    assert err.value.temporary
    assert len(https.posts) == 1


async def test_https_certificate_checked_unless_disabled(
    doc: ReportDocument, https: HttpsReceiver
) -> None:
    """RFC 8460 §5.4: verification is on by default; the operator MAY switch it off."""
    with pytest.raises(DeliveryError):
        await https_post(doc.gzip_bytes(), https.url(), _delivery())
    await https_post(doc.gzip_bytes(), https.url(), _delivery(https_verify=False))
    assert len(https.posts) == 1


async def test_private_destinations_refused_by_default(doc: ReportDocument) -> None:
    settings = DeliverySettings(envelope_sender="b@sender.example")
    with pytest.raises(DeliveryError) as err:
        await https_post(doc.gzip_bytes(), "https://127.0.0.1:9/x", settings)
    assert not err.value.temporary
