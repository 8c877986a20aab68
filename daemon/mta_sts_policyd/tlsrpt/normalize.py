"""Normalisation of names and failure details before they are counted and reported.

Pure. Applied by the store at ingestion so free-text variants (multi-line EHLO replies, long
library messages) do not fragment the aggregates (docs/conformance.md: RPT-aggregate-key), and again
by the report builder so every emitted value satisfies the report schema (RFC 8460 §4.3, §4.4, §7).
"""

from __future__ import annotations

import ipaddress
import re

from mta_sts_policyd.errors import InvalidName, ResultType
from mta_sts_policyd.sts.names import to_a_label
from mta_sts_policyd.tlsrpt.model import FailureDetail

MAX_TEXT = 255
"""Bound for every free-text field (RFC 8460 §7): enough for an error code plus a short message."""

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>\\^`{|}]+")
_NEEDS_REASON = (ResultType.CERTIFICATE_NOT_TRUSTED, ResultType.VALIDATION_FAILURE)


def report_name(name: str) -> str:
    """A name as a report writes it (RFC 8460 §4.4): A-label, lower case, no trailing dot.

    The A-label comes from sts.names.to_a_label, the converter discovery and the probe use, so
    a report goes to the same domain whose policy was applied. A leading `*.` wildcard is kept.
    Names reach the store already checked (datagram, mail log and probe parsers); one that
    still has no A-label form is kept lower-case as given rather than guessed at, and the
    report schema checks drop it where a host name is required.
    """
    name = name.strip().rstrip(".")
    try:
        return to_a_label(name)
    except InvalidName:
        return name.lower()


_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def hostname(value: str | None) -> str | None:
    """A-label host name (a leading `*.` allowed), or None if `value` is not one."""
    if not value:
        return None
    name = report_name(value)
    return name if len(name) <= 253 and _HOSTNAME.fullmatch(name) else None


def bound_text(value: str | None, limit: int = MAX_TEXT) -> str | None:
    """Single line, printable, at most `limit` characters; None for empty."""
    if value is None:
        return None
    line = " ".join(value.split())  # collapses CR/LF/tabs and runs of spaces
    line = "".join(ch for ch in line if ch.isprintable())
    return line[:limit] or None


def ip_text(value: str | None) -> str | None:
    """Dotted quad or RFC 5952 text (RFC 8460 §4.4); anything unparsable is left out."""
    if not value:
        return None
    try:
        return ipaddress.ip_address(value.strip().strip("[]")).compressed
    except ValueError:
        return None


def _helo(value: str | None) -> str | None:
    """Postfix passes the whole EHLO reply; keep the first word of the first line."""
    if not value:
        return None
    first = value.strip().splitlines()[0].split() if value.strip() else []
    return bound_text(first[0]) if first else None


def normalize_detail(d: FailureDetail) -> FailureDetail:
    """Canonical form of one failure detail; idempotent."""
    reason = bound_text(d.failure_reason_code)
    info = bound_text(d.additional_information)
    if info is not None and not _URI.fullmatch(info):
        # RFC 8460 §4.4 wants a URI here; free text from the MTA goes to the reason code.
        reason = bound_text(f"{reason}; {info}" if reason else info)
        info = None
    if reason is None and d.result_type in _NEEDS_REASON:
        reason = "unspecified"  # RFC 8460 §4.3: these result types SHOULD carry a reason code
    return FailureDetail(
        result_type=d.result_type,
        sending_mta_ip=ip_text(d.sending_mta_ip),
        receiving_mx_hostname=hostname(d.receiving_mx_hostname),
        receiving_mx_helo=_helo(d.receiving_mx_helo),
        receiving_ip=ip_text(d.receiving_ip),
        additional_information=info,
        failure_reason_code=reason,
    )
