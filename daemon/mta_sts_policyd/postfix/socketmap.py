"""The socketmap protocol as pure functions: netstring framing, requests, OK/NOTFOUND/TEMP.

Postfix's socketmap_table(5); see docs/conformance.md. No I/O and no clock: `server.py` owns
the sockets, `policy_reply.py` renders the policy a reply carries.
"""

from __future__ import annotations

from mta_sts_policyd.errors import NetstringError

MAX_REQUEST = 10_000
"""docs/conformance.md: PF-socketmap-size: Postfix never sends a query above 10000 bytes
(`socketmap_max_query_size`)."""
MAX_REPLY = 100_000
"""docs/conformance.md: PF-socketmap-size: `socketmap_max_reply_size`; a larger reply is a lookup
error (deferral)."""

REPLY_NOTFOUND = b"NOTFOUND "
"""docs/conformance.md: PF-socketmap-reply: always with the space; Postfix tolerates its absence,
other clients may not."""


# --- netstrings (docs/conformance.md: PF-socketmap-netstring) -------------------------------------


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


# --- requests (docs/conformance.md: PF-socketmap-request) -----------------------------------------


def parse_request(payload: bytes) -> tuple[str, str]:
    """Split a request `NAME SP KEY` at the first space; never raises.

    The map name is returned for logging only: the key is answered whatever the name, as
    PERM would defer mail (docs/conformance.md: PF-socketmap-request). A payload without a space has
    a name but no key, so the key is "" and the lookup answers NOTFOUND instead of guessing. Bytes
    that are not UTF-8 decode with U+FFFD, which no valid domain contains, so such keys end as
    NOTFOUND.
    """
    name, _, key = payload.partition(b" ")
    return name.decode("utf-8", "replace"), key.decode("utf-8", "replace")


# --- replies (docs/conformance.md: PF-socketmap-reply) --------------------------------------------


def reply_ok(data: str) -> bytes:
    """`OK data`; empty data would reach Postfix as "invalid empty policy" (docs/conformance.md:
    PF-socketmap-reply)."""
    if not data.strip(" \t\r\n,"):
        raise ValueError("OK reply needs non-empty data")
    return b"OK " + data.encode()


def reply_temp(reason: str) -> bytes:
    """`TEMP reason`; Postfix logs the reason, so control characters become `?`.

    Use sparingly: Postfix caches the failure per smtp(8) process (docs/conformance.md:
    PF-socketmap-no-temp).
    """
    clean = "".join(c if c.isprintable() else "?" for c in reason)
    return b"TEMP " + clean.encode()
