"""The report e-mail (RFC 8460 §5.3) and its DKIM signature (§3). Pure: clock values come in.

Every name in the message (Subject, TLS-Report-* headers, filename) comes from the one
ReportDocument, so they cannot disagree with the JSON (RFC 8460 §5.6).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime

import dkim

from mta_sts_policyd.tlsrpt.report import ReportDocument

CONTENT_TYPE_GZIP = "application/tlsrpt+gzip"

SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"tls-report-domain",
    b"tls-report-submitter",
    b"auto-submitted",
    b"tls-required",
)
"""RFC 8460 §3: the TLS-Report-* headers must be listed explicitly (dkimpy's default omits them)."""


_POLICY = email_policy.SMTP.clone(max_line_length=998)
"""For serialising only: CRLF, no header folding below RFC 5322's 998 limit, so the RFC
filename stays one plain parameter (not RFC 2231 continuations some receivers cannot decode)."""


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """The key that signs report mail (RFC 8460 §3: d= should be the submitter's domain)."""

    domain: str = ""
    selector: str = ""
    private_key_path: str = ""
    allow_unsigned: bool = False
    """Send without DKIM when no key is configured; receivers MAY then ignore the report."""

    @property
    def configured(self) -> bool:
        return bool(self.domain and self.selector and self.private_key_path)


def build_message(
    doc: ReportDocument, *, from_addr: str, to_addr: str, date: datetime, message_id: str
) -> bytes:
    """multipart/report; report-type="tlsrpt": text part + gzipped JSON (RFC 8460 §3, §5.2,
    §5.3)."""
    msg = EmailMessage(policy=email_policy.SMTP)  # bodies encoded in 76-char lines
    msg["From"] = from_addr
    msg["To"] = to_addr
    msg["Subject"] = doc.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    msg["TLS-Report-Domain"] = doc.report_domain
    msg["TLS-Report-Submitter"] = doc.submitter
    msg["TLS-Required"] = "No"  # RFC 8689; reports must get through broken TLS (RFC 8460 §3)
    msg["Auto-Submitted"] = "auto-generated"
    msg["MIME-Version"] = "1.0"
    msg.set_content(doc.text_body(), subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_attachment(
        doc.gzip_bytes(), maintype="application", subtype="tlsrpt+gzip", filename=doc.filename
    )
    for part in msg.iter_parts():
        del part["MIME-Version"]  # only the top level carries it
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    msg.set_boundary(f"=_tlsrpt_{doc.unique_id}")  # stable output; base64/QP never contain it
    return msg.as_bytes(policy=_POLICY)


def sign_message(message: bytes, settings: DkimSettings, private_key: bytes) -> bytes:
    """Prepend a DKIM-Signature (relaxed/relaxed, no l=) by the reporting domain."""
    header = dkim.sign(
        message,
        settings.selector.encode(),
        settings.domain.encode(),
        private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(SIGNED_HEADERS),
        tlsrpt=True,  # never emits l= (RFC 8460 §3)
    )
    return bytes(header) + message


def signature_header(signed: bytes, message: bytes) -> bytes:
    """The DKIM-Signature header `sign_message` put in front of `message` (kept by the fleet,
    so a re-send after a crash can carry the same signature: byte-identical mail)."""
    if not signed.endswith(message):
        raise ValueError("signed message does not end with the message")
    return signed[: len(signed) - len(message)]


def stable_message_id(doc: ReportDocument, destination: str) -> str:
    """A Message-ID that the report's content and destination alone decide: every re-send of
    the same report to the same destination is the same message (fleet mode)."""
    return message_id_for(doc, destination, hashlib.sha256(doc.json_bytes).hexdigest()[:16])


def message_id_for(doc: ReportDocument, destination: str, attempt_token: str) -> str:
    """Unique per message, traceable to the report: <uniqueid.token@submitter>."""
    safe = "".join(ch for ch in attempt_token if ch.isalnum())[:32] or "0"
    tag = "".join(ch for ch in destination if ch.isalnum())[:24]
    return f"<{doc.unique_id}.{tag}.{safe}@{doc.submitter}>"
