"""Report documents out of what arrives: a mail message (RFC 8460 §5.3), a saved report file
(the gzip or the bare JSON an operator feeds the intake) or an HTTPS body (§5.4).

Pure: bytes in, JSON documents out. Gzip is inflated with a hard cap on the inflated size, so a
small attachment that would inflate to gigabytes (a gzip bomb) is refused after reading at
most the cap.
"""

from __future__ import annotations

import codecs
import email
import email.policy
import zlib
from email.message import EmailMessage, Message

from mta_sts_policyd.errors import ReportRejected

MAX_INFLATED = 10 * 1024 * 1024
"""Largest report accepted after gunzip (RFC 8460 senders cap theirs far below this)."""

_GZIP_TYPES = ("application/tlsrpt+gzip", "application/gzip", "application/x-gzip")
_JSON_TYPES = ("application/tlsrpt+json", "application/json")
_GZIP_MAGIC = b"\x1f\x8b"
_JSON_STARTS = (b"{", b"[")
"""How a bare JSON document begins (after a BOM and white space); no mail message does."""
_SAMPLE = 24


def gunzip(data: bytes, limit: int = MAX_INFLATED) -> bytes:
    """Inflate one gzip stream, refusing anything that inflates beyond `limit` bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ReportRejected(f"attachment is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ReportRejected(f"report inflates beyond {limit} bytes (refused as a gzip bomb)")
    if not inflater.eof:
        raise ReportRejected("attachment is a truncated gzip stream")
    return out


def documents_from_body(body: bytes, content_type: str, limit: int = MAX_INFLATED) -> list[bytes]:
    """An HTTPS POST body: `application/tlsrpt+gzip` or `application/tlsrpt+json` (§5.4)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in _GZIP_TYPES:
        return [gunzip(body, limit)]
    if kind in _JSON_TYPES:
        if len(body) > limit:
            raise ReportRejected(f"report larger than {limit} bytes")
        return [body]
    raise ReportRejected(f"content type {kind!r} is not a TLS report (RFC 8460 §5.4)")


def documents_from_message(raw: bytes, limit: int = MAX_INFLATED) -> list[bytes]:
    """Every report attached to a mail message, in order; ReportRejected if there is none.

    Attachments are recognised by the RFC's media types, and, because some senders label them
    `application/octet-stream`, by a `.json` / `.json.gz` / `.gz` filename or the gzip magic.
    A saved report file, gzip or bare JSON (compression is only a SHOULD, §5.3), is taken as
    it is: its first bytes tell it from a message, as a sender's unlabelled gzip is told.
    """
    bare = _bare_document(raw, limit)
    if bare is not None:
        return [bare]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    found: list[bytes] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        document = _document(part, limit)
        if document is not None:
            found.append(document)
    if not found and not message.keys():
        raise ReportRejected(
            f"input is neither a mail message, gzip nor a JSON report: {_what_was_read(raw)}"
        )
    if not found:
        subject = str(message.get("Subject", "") or "")[:80]
        raise ReportRejected(f"no TLS report attached (subject {subject!r})")
    return found


def _bare_document(raw: bytes, limit: int) -> bytes | None:
    """The report of a saved report file (gzip, or JSON), or None for anything else."""
    if raw.startswith(_GZIP_MAGIC):
        return gunzip(raw, limit)
    if raw.removeprefix(codecs.BOM_UTF8).lstrip().startswith(_JSON_STARTS):
        if len(raw) > limit:
            raise ReportRejected(f"report larger than {limit} bytes")
        return raw
    return None


def _what_was_read(raw: bytes) -> str:
    """The size and first bytes of an input, for a reason an operator can act on."""
    if not raw:
        return "read nothing (0 bytes)"
    more = "..." if len(raw) > _SAMPLE else ""
    return f"read {len(raw)} bytes, starting {raw[:_SAMPLE]!r}{more}"


def _document(part: Message, limit: int) -> bytes | None:
    kind = part.get_content_type().lower()
    filename = (part.get_filename() or "").lower()
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        return None
    if kind in _GZIP_TYPES or filename.endswith(".gz") or payload.startswith(_GZIP_MAGIC):
        if kind.startswith("text/") and not payload.startswith(_GZIP_MAGIC):
            return None
        return gunzip(payload, limit)
    if kind in _JSON_TYPES or filename.endswith(".json"):
        if len(payload) > limit:
            raise ReportRejected(f"report larger than {limit} bytes")
        return payload
    return None


def message_id(raw: bytes) -> str:
    """The Message-ID of a message (for log lines), or '-'."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    if not isinstance(message, EmailMessage):
        return "-"
    return str(message.get("Message-ID", "-") or "-")[:200]
