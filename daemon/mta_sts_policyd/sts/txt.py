"""`_mta-sts` TXT record parsing (RFC 8461 §3.1; spec A6-A15)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mta_sts_policyd.sts.model import TxtInvalid, TxtRecord, TxtResult


def parse_txt_record(text: str) -> TxtRecord | TxtInvalid:
    """Parse one (already concatenated) candidate record."""
    raise NotImplementedError


def select_sts_record(rrs: Iterable[Sequence[bytes]]) -> TxtResult:
    """From the TXT RRset (each RR = its character-strings), pick the one STS record."""
    raise NotImplementedError
