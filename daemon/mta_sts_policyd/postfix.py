"""The Postfix side as pure functions: socketmap netstrings and policy replies.

Spec references: C.1 (socketmap protocol), C.2.4 (policy value syntax), C.3 (`.x` patterns),
C.4.2 (Postfix 3.10+ STS attributes), C.5 (decision table), D.38-D.49, D.53.
No I/O and no clock: server.py owns the sockets, lookup.py decides which policy applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from mta_sts_policyd.errors import NetstringError
from mta_sts_policyd.sts._names import hostname_problem
from mta_sts_policyd.sts.match import mx_matches
from mta_sts_policyd.sts.model import Mode, Policy

MAX_REQUEST = 10_000
"""C.1.5: Postfix never sends a query above 10000 bytes (`socketmap_max_query_size`)."""
MAX_REPLY = 100_000
"""C.1.5: `socketmap_max_reply_size`; a larger reply is a lookup error (deferral)."""

REPLY_NOTFOUND = b"NOTFOUND "
"""C.1.4: always with the space; Postfix tolerates its absence, other clients may not."""

_UNSAFE_IN_BRACES_RE = re.compile(r"[{}\x00-\x1f\x7f]")


# --- netstrings (C.1.2) -------------------------------------------------------------------


def encode_netstring(payload: bytes) -> bytes:
    """Frame one payload: `<decimal length>:<payload>,`."""
    return b"%d:%b," % (len(payload), payload)


class NetstringDecoder:
    """Incremental (sans-IO) netstring decoder for socketmap requests.

    Strict per D. J. Bernstein's definition: the length is a non-empty run of ASCII digits
    without leading zeros ("0" alone is fine). Postfix itself never writes leading zeros, so
    rejecting them costs nothing and keeps one canonical encoding; with the digit count capped
    at the digits of `max_length`, a hostile prefix is rejected after a few bytes. After the
    first error the decoder is dead: the stream position is unknown, so the server must close.
    """

    __slots__ = ("_buf", "_error", "_max_digits", "_max_length")

    def __init__(self, max_length: int = MAX_REQUEST) -> None:
        self._max_length = max_length
        self._max_digits = len(str(max_length))
        self._buf = bytearray()
        self._error: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every payload completed so far (possibly none).

        Whole netstrings in `data` are sliced out without copying the input; only an
        incomplete tail is kept, in a bytearray, so a request that trickles in byte by byte
        costs linear, not quadratic, time.
        """
        if self._error is not None:
            raise NetstringError(f"decoder closed after error: {self._error}")
        buf: bytes | bytearray = data
        if self._buf:
            self._buf += data
            buf = self._buf
        out: list[bytes] = []
        pos = 0
        try:
            while pos < len(buf):
                colon, end = self._next(buf, pos)
                if end < 0:
                    break
                out.append(bytes(buf[colon + 1 : end]))
                pos = end + 1
        except NetstringError as exc:
            self._error = str(exc)
            self._buf = bytearray()
            raise
        if buf is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        return out

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete netstring held back (0 between requests)."""
        return len(self._buf)

    def _next(self, buf: bytes | bytearray, pos: int) -> tuple[int, int]:
        """Indexes of `:` and the closing `,` of the netstring at `pos`; end -1 if incomplete."""
        colon = buf.find(b":", pos, pos + self._max_digits + 1)
        digits = buf[pos:colon] if colon >= 0 else buf[pos : pos + self._max_digits + 1]
        if digits and not digits.isdigit():
            raise NetstringError(f"length is not decimal: {digits[:12]!r}")
        if len(digits) > 1 and digits[0] == 0x30:
            raise NetstringError("length has a leading zero")
        if colon < 0:
            if len(digits) > self._max_digits:
                raise NetstringError("length prefix too long")
            return colon, -1
        if not digits:
            raise NetstringError("empty length")
        length = int(digits)
        if length > self._max_length:
            raise NetstringError(f"length {length} exceeds limit {self._max_length}")
        end = colon + 1 + length
        if end >= len(buf):
            return colon, -1
        if buf[end] != 0x2C:
            raise NetstringError("missing ',' after payload")
        return colon, end


# --- requests (C.1.3, D.53) ---------------------------------------------------------------


def parse_request(payload: bytes) -> tuple[str, str]:
    """Split a request `NAME SP KEY` at the first space; never raises.

    The map name is returned for logging only: D.53 says answer by key whatever the name, as
    PERM would defer mail. A payload without a space has a name but no key, so the key is ""
    and the lookup answers NOTFOUND (C.5 "empty key") instead of guessing. Bytes that are not
    UTF-8 decode with U+FFFD, which no valid domain contains, so such keys end as NOTFOUND.
    """
    name, _, key = payload.partition(b" ")
    return name.decode("utf-8", "replace"), key.decode("utf-8", "replace")


# --- replies (C.1.4) ----------------------------------------------------------------------


def reply_ok(data: str) -> bytes:
    """`OK data`; empty data would reach Postfix as "invalid empty policy" (D.47)."""
    if not data.strip(" \t\r\n,"):
        raise ValueError("OK reply needs non-empty data (D.47)")
    return b"OK " + data.encode()


def reply_temp(reason: str) -> bytes:
    """`TEMP reason`; Postfix logs the reason, so control characters become `?`.

    Use sparingly: Postfix caches the failure per smtp(8) process (D.60).
    """
    clean = "".join(c if c.isprintable() else "?" for c in reason)
    return b"TEMP " + clean.encode()


def render_policy_reply(
    policy: Policy,
    policy_domain: str,
    *,
    sts_attributes: bool,
    mx_hosts: Sequence[str] | None = None,
    max_size: int = MAX_REPLY,
) -> bytes:
    """The whole reply payload for a valid policy (C.5 rows 3-4).

    enforce -> `OK secure match=... servername=hostname` (+ C.4.2 attributes when
    `sts_attributes`, for Postfix >= 3.10 only, D.45); testing/none -> NOTFOUND.
    Every mx pattern is re-validated here, so a hand-made Policy cannot inject attributes; if
    none survives, or even the bare `secure` reply exceeds `max_size`, the answer is NOTFOUND:
    an oversized reply would defer mail, and remote trouble fails open (RFC 8461 §3.3).
    `mx_hosts`, when given, narrows `*.x` patterns to the MX names they match (see
    `match_list`). Same input, same bytes.
    """
    if policy.mode is not Mode.ENFORCE:
        return REPLY_NOTFOUND
    patterns = valid_mx_patterns(policy.mx)
    if not patterns:
        return REPLY_NOTFOUND
    core = ["secure", "match=" + ":".join(match_list(patterns, mx_hosts)), "servername=hostname"]
    candidates = [core]
    domain = _valid_hosts([policy_domain])
    if sts_attributes and domain:
        tlsrpt = [f"policy_type=sts policy_domain={domain[0]}"]
        tlsrpt += [f"mx_host_pattern={p}" for p in patterns]
        strings = [f"{{ policy_string = {x} }}" for x in policy.lines if _line_safe(x)]
        candidates = [core + tlsrpt + strings, core + tlsrpt, core]
    for parts in candidates:
        reply = reply_ok(" ".join(parts))
        if len(reply) <= max_size:
            return reply
    return REPLY_NOTFOUND


def match_list(patterns: Sequence[str], mx_hosts: Sequence[str] | None) -> list[str]:
    """Postfix `match=` entries for patterns from `valid_mx_patterns`, in order, deduplicated.

    Without MX names, `*.x` becomes `.x` (C.3: one or more labels, looser than the RFC). With
    them, `*.x` becomes the MX names it matches under RFC 8461 §4.1 (exactly one label), sorted
    so DNS answer order does not change the bytes. A wildcard matching none of them falls back
    to `.x`, exactly what the reply says without MX names: an empty or stale MX set then costs
    precision, not mail. Caveat: a new MX under `x` that appeared after `mx_hosts` was resolved
    is deferred unless its certificate also names a listed host, so callers must pass MX names
    no older than their DNS TTL.
    """
    hosts = None if mx_hosts is None else _valid_hosts(mx_hosts)
    out: dict[str, None] = {}
    for pattern in patterns:
        if not pattern.startswith("*."):
            out[pattern] = None
            continue
        hits = sorted(h for h in hosts or () if mx_matches(pattern, h))
        if not hits:
            hits = [pattern[1:]]
        out.update(dict.fromkeys(hits))
    return list(out)


def valid_mx_patterns(patterns: Iterable[str]) -> list[str]:
    """Patterns that satisfy the RFC 8461 mx grammar, lower-cased, deduplicated, in order.

    Anything else (spaces, `=`, braces, `:`, `_`, trailing dot, inner `*`, non-ASCII) is
    dropped: it could otherwise add a Postfix attribute or match entry (DESIGN house rule).
    """
    out: dict[str, None] = {}
    for pattern in patterns:
        name = pattern[2:] if pattern.startswith("*.") else pattern
        if _is_domain(name):
            out[pattern.lower()] = None
    return list(out)


def _valid_hosts(hosts: Iterable[str]) -> list[str]:
    """MX host names from DNS: one trailing dot stripped, lower-cased, invalid ones dropped."""
    names = (h[:-1] if h.endswith(".") else h for h in hosts)
    return [n.lower() for n in names if _is_domain(n)]


def _is_domain(name: str) -> bool:
    """The policy parser's own host-name grammar (A32): LDH A-labels, no numeric TLD.

    That also satisfies Postfix's valid_hostname() for `policy_domain=` (C.4.2).
    """
    return hostname_problem(name) is None


def _line_safe(line: str) -> bool:
    """True if `{ policy_string = line }` reaches Postfix unchanged and is a validated line.

    Braces would unbalance the group (C.2.4, D.38); control characters are rewritten to
    spaces and surrounding whitespace is trimmed by Postfix's parser, so the string would
    change. An `mx:` line whose pattern fails the grammar is dropped like its pattern, so
    the reported policy never shows a pattern that was not enforced.
    """
    if not line or line != line.strip() or _UNSAFE_IN_BRACES_RE.search(line):
        return False
    key, _, value = line.partition(":")
    return key != "mx" or bool(valid_mx_patterns([value.strip()]))
