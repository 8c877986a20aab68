"""Does a TLS ClientHello offer a given ALPN protocol (RFC 7301 §3.1)? Pure; never raises.

Why it exists: a tls-alpn-01 challenge (RFC 8737 §3) must be answered only to handshakes that
offer `acme-tls/1`, while senders asking for the same name at the same moment must still get
the real certificate. Python's `ssl` picks the certificate in the SNI callback, before it
tells anyone what ALPN the client offered, so `server.py` reads the offer from the ClientHello
as OpenSSL hands it to the context's message callback (before the SNI callback runs).
"""

from __future__ import annotations

CLIENT_HELLO = 1
ALPN_EXTENSION = 16


def offers_alpn(hello: bytes, protocol: bytes) -> bool:
    """`hello`: the handshake message with its 4-byte header (type, 24-bit length)."""
    try:
        if hello[0] != CLIENT_HELLO:
            return False
        pos = 4 + 2 + 32  # header, legacy_version, random
        pos += 1 + hello[pos]  # legacy_session_id
        pos += 2 + _u16(hello, pos)  # cipher_suites
        pos += 1 + hello[pos]  # legacy_compression_methods
        end = min(len(hello), pos + 2 + _u16(hello, pos))
        pos += 2
        while pos + 4 <= end:
            kind, size = _u16(hello, pos), _u16(hello, pos + 2)
            pos += 4
            if kind == ALPN_EXTENSION:
                return protocol in _names(hello[pos + 2 : pos + size])
            pos += size
    except IndexError:
        return False
    return False


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _names(data: bytes) -> list[bytes]:
    """ProtocolNameList entries: one length byte, then the name."""
    names, pos = [], 0
    while pos < len(data):
        size = data[pos]
        names.append(data[pos + 1 : pos + 1 + size])
        pos += 1 + size
    return names
