"""`_smtp._tls` TXT record: selection and parsing per the RFC 8460 §3 ABNF.

Pure functions over the TXT strings; the lookup itself is an injected async callable so tests
and the daemon can share one resolver. Deliberately more tolerant than sys4's parser:
spaces around `,` and `;`, extensions before `rua=`, several `rua=` fields.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from mta_sts_policyd.errors import MtaStsError

TxtQuery = Callable[[str], Awaitable[list[list[bytes]]]]
"""A function that asks for a name's TXT RRset (each RR as its character-strings); [] for
NXDOMAIN/no data. Not the `_mta-sts` lookup (net.dns_client.StsTxtLookup is its answer).

Raises `DnsLookupError` when the answer could not be obtained (the caller retries later).
"""

_CANDIDATE = re.compile(r"v=TLSRPTv1[ \t]*;")
_WSP = "[ \t]*"
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[\x21-\x2b\x2d-\x3a\x3c-\x7e]+")
_FIELD_SPLIT = re.compile(_WSP + ";" + _WSP)
_RUA_SPLIT = re.compile(_WSP + "," + _WSP)
_ADDR = re.compile(r"[^@\s<>()\[\],;:\"]+@[A-Za-z0-9.\-]+")


class RecordSyntaxError(MtaStsError):
    """The one TLSRPT candidate record does not follow the ABNF: the domain gets no report."""


@dataclass(frozen=True, slots=True)
class RuaDestination:
    """One usable report destination: an e-mail address or an https URL."""

    kind: Literal["mailto", "https"]
    target: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" if self.kind == "mailto" else self.target


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    text: str
    destinations: tuple[RuaDestination, ...]
    unsupported: tuple[str, ...] = ()
    """rua URIs that are not mailto:/https: (RFC 8460 §3) or are malformed; logged, not fatal."""
    extensions: tuple[tuple[str, str], ...] = ()


def is_candidate(text: str) -> bool:
    """RFC 8460 §3: starts with the case-sensitive `v=TLSRPTv1`, optional WSP, then `;`."""
    return _CANDIDATE.match(text) is not None


def select_tlsrpt_record(rrs: Iterable[Sequence[bytes]]) -> str | None:
    """RFC 8460 §3: join each RR's strings without separators; exactly one candidate or None."""
    candidates = []
    for rr in rrs:
        text = b"".join(rr).decode("utf-8", "replace")
        if is_candidate(text):
            candidates.append(text)
    return candidates[0] if len(candidates) == 1 else None


def parse_tlsrpt_record(text: str) -> TlsRptRecord:
    """Parse one candidate record (RFC 8460 §3); raises RecordSyntaxError if it is not one."""
    if not is_candidate(text):
        raise RecordSyntaxError("record does not start with v=TLSRPTv1;")
    fields = _FIELD_SPLIT.split(text)
    if fields[-1] == "":
        fields.pop()  # optional trailing delimiter
    if len(fields) < 2:
        raise RecordSyntaxError("record has no field after the version")
    destinations: list[RuaDestination] = []
    unsupported: list[str] = []
    extensions: list[tuple[str, str]] = []
    for field in fields[1:]:
        if field.startswith("rua="):
            for uri in _split_rua(field[4:]):
                _classify(uri, destinations, unsupported)
        else:
            extensions.append(_parse_extension(field))
    return TlsRptRecord(
        text=text,
        destinations=tuple(dict.fromkeys(destinations)),
        unsupported=tuple(unsupported),
        extensions=tuple(extensions),
    )


def _split_rua(value: str) -> list[str]:
    uris = _RUA_SPLIT.split(value)
    for uri in uris:
        if not _URI.fullmatch(uri):
            raise RecordSyntaxError(f"rua value {uri!r} is not a URI")
    return uris


def _parse_extension(field: str) -> tuple[str, str]:
    name, sep, value = field.partition("=")
    if not sep or not _EXT_NAME.fullmatch(name) or not _EXT_VALUE.fullmatch(value):
        raise RecordSyntaxError(f"field {field!r} is neither rua= nor an extension")
    return name, value


def _classify(uri: str, out: list[RuaDestination], unsupported: list[str]) -> None:
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "mailto":
        addresses = _mailto_addresses(rest)
        if not addresses:
            unsupported.append(uri)
        out.extend(RuaDestination("mailto", a) for a in addresses)
    elif scheme == "https" and _https_ok(uri):
        out.append(RuaDestination("https", "https:" + rest))
    else:
        unsupported.append(uri)


def _mailto_addresses(rest: str) -> list[str]:
    """RFC 6068: path = addr-spec list (percent-encoded `,` separates), query ignored."""
    path = rest.split("?", 1)[0]
    addresses = [a.strip() for a in unquote(path).split(",")]
    if not all(_ADDR.fullmatch(a) for a in addresses):
        return []
    return addresses


def _https_ok(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        _ = parts.port  # raises ValueError for a malformed port
        return bool(parts.hostname)
    except ValueError:
        return False


async def fetch_tlsrpt_record(domain: str, txt_lookup: TxtQuery) -> TlsRptRecord | None:
    """Look up `_smtp._tls.<domain>`; None if the domain does not request reports.

    A syntactically broken single candidate also means "no report" (RFC 8460 §3); DNS failures
    propagate as DnsLookupError so the caller can retry.
    """
    text = select_tlsrpt_record(await txt_lookup(f"_smtp._tls.{domain.rstrip('.')}"))
    if text is None:
        return None
    try:
        return parse_tlsrpt_record(text)
    except RecordSyntaxError:
        return None


async def report_record(
    known_text: str | None, domain: str, txt_lookup: TxtQuery | None
) -> TlsRptRecord | None:
    """Where a day's report goes: the record text the producer saw (Postfix's `pr`) when known,
    else the domain's `_smtp._tls` record from DNS (RFC 8460 §3); None: no report."""
    if known_text is not None:
        try:
            return parse_tlsrpt_record(known_text)
        except RecordSyntaxError:
            return None
    if txt_lookup is None:
        return None
    return await fetch_tlsrpt_record(domain, txt_lookup)
