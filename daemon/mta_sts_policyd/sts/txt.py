"""`_mta-sts` TXT record parsing (RFC 8461 §3.1, §3.3)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mta_sts_policyd.sts.model import TxtAbsent, TxtInvalid, TxtRecord, TxtResult
from mta_sts_policyd.sts.names import show

_VERSION = "v=STSv1"
_CANDIDATE = re.compile(rb"v=STSv1[ \t]*;")
_DELIMITER = re.compile(r"[ \t]*;[ \t]*")
_ID = re.compile(r"[A-Za-z0-9]{1,32}", re.ASCII)
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", re.ASCII)
_MISSING_ID = "the required field 'id' is missing (field names are case-sensitive)"
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+", re.ASCII)


def is_candidate(record: bytes) -> bool:
    """RFC 8461 §3.1: exact `v=STSv1`, optional SP/HTAB, then `;` — at the very start."""
    return _CANDIDATE.match(record) is not None


def select_sts_record(rrs: Iterable[Sequence[bytes]]) -> TxtResult:
    """From the TXT RRset (each RR = its character-strings), pick the one STS record.

    Each RR's strings are joined without separator (RFC 8461 §3.1); RRs that are not candidates are
    dropped; exactly one candidate must remain and parse, else there is no live policy.
    """
    candidates = [joined for rr in rrs if is_candidate(joined := b"".join(rr))]
    if not candidates:
        return TxtAbsent()
    if len(candidates) > 1:
        return TxtInvalid(
            f"{len(candidates)} TXT records start with v=STSv1; exactly one is allowed"
        )
    record = candidates[0]
    if not record.isascii():
        offset = next(i for i, byte in enumerate(record) if byte > 0x7F)
        return TxtInvalid(f"the record contains a non-ASCII byte at offset {offset}")
    return parse_txt_record(record.decode("ascii"))


def parse_txt_record(text: str) -> TxtRecord | TxtInvalid:
    """Parse one (already concatenated) candidate record against the RFC 8461 §3.1 ABNF.

    The first `id` field is the id; later `id` fields must still be well-formed
    fields but are ignored, as are extensions. Extensions keep their first occurrence.
    """
    if not text.isascii():
        return TxtInvalid("the record contains non-ASCII characters")
    if text.startswith(_VERSION) and not text[len(_VERSION) :].strip(" \t"):
        return TxtInvalid(_MISSING_ID)
    if not text.startswith(_VERSION) or not _DELIMITER.match(text, len(_VERSION)):
        return TxtInvalid(f"the record does not start with 'v=STSv1' and ';': {show(text)}")
    fields = _DELIMITER.split(text[len(_VERSION) :])[1:]
    if fields and not fields[-1]:
        fields.pop()  # one trailing delimiter is allowed
    record_id: str | None = None
    extensions: dict[str, str] = {}
    for field in fields:
        name, equals, value = field.partition("=")
        if name == "id" and equals and record_id is None:
            if not _ID.fullmatch(value):
                return TxtInvalid(f"id {show(value)} is not 1-32 letters or digits")
            record_id = value
            continue
        problem = _field_problem(field, name, equals, value)
        if problem is not None:
            return TxtInvalid(problem)
        if name != "id":
            extensions.setdefault(name, value)
    if record_id is None:
        return TxtInvalid(_MISSING_ID)
    return TxtRecord(id=record_id, extensions=tuple(extensions.items()))


def _field_problem(field: str, name: str, equals: str, value: str) -> str | None:
    """Why `field` is neither an id nor an extension per the ABNF, or None."""
    if not field:
        return "empty field (two ';' in a row)"
    if not equals:
        return f"field {show(field)} has no '='"
    if not _EXT_NAME.fullmatch(name):
        return f"field name {show(name)} is not valid"
    if not _EXT_VALUE.fullmatch(value):
        return f"the value of {show(name)} is empty or has a space, control character, '=' or ';'"
    return None
