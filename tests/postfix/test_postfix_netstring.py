"""Socketmap framing and request parsing (docs/conformance.md: PF-socketmap-netstring,
PF-socketmap-request, PF-socketmap-size, PF-socketmap-framing-error, PF-socketmap-sequential)."""

from __future__ import annotations

import pytest

from mta_sts_policyd.errors import NetstringError
from mta_sts_policyd.postfix.socketmap import NetstringDecoder, encode_netstring, parse_request


def test_encode_examples() -> None:
    assert encode_netstring(b"postfix example.com") == b"19:postfix example.com,"
    assert encode_netstring(b"") == b"0:,"
    assert encode_netstring(b"a,b:c") == b"5:a,b:c,"


def test_pipelined_requests_in_one_chunk() -> None:
    decoder = NetstringDecoder()
    got = decoder.feed(b"19:postfix example.com,20:postfix example.org.,")
    assert got == [b"postfix example.com", b"postfix example.org."]
    assert decoder.buffered == 0


def test_split_byte_by_byte() -> None:
    decoder = NetstringDecoder()
    wire = b"19:postfix example.com,0:,3:a,b,"
    got: list[bytes] = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i : i + 1])
    assert got == [b"postfix example.com", b"", b"a,b"]


def test_partial_payload_is_held_back() -> None:
    decoder = NetstringDecoder()
    assert decoder.feed(b"19:postfix exa") == []
    assert decoder.buffered == len(b"19:postfix exa")
    assert decoder.feed(b"mple.com,1") == [b"postfix example.com"]
    assert decoder.buffered == 1


def test_feed_empty_bytes_is_harmless() -> None:
    decoder = NetstringDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"1:x,") == [b"x"]


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"abc:postfix,", "not decimal"),  # PF-socketmap-framing-error
        (b"1a:x,", "not decimal"),
        (b"-1:x,", "not decimal"),
        (b" 1:x,", "not decimal"),
        (b"3:abcd", "missing ','"),  # PF-socketmap-framing-error: missing comma
        (b"3:abc;", "missing ','"),
        (b":x,", "empty length"),
        (b"01:x,", "leading zero"),  # netstring definition: no leading zeros
        (b"00:,", "leading zero"),
        (b"10001:", "exceeds limit"),  # PF-socketmap-framing-error: length above the request cap
        (b"999999", "too long"),  # rejected before any ':' arrives
    ],
)
def test_malformed_framing_raises(wire: bytes, reason: str) -> None:
    with pytest.raises(NetstringError, match=reason):
        NetstringDecoder().feed(wire)


def test_error_detected_byte_by_byte_too() -> None:
    decoder = NetstringDecoder()
    decoder.feed(b"1")
    decoder.feed(b"0")
    decoder.feed(b"0")
    decoder.feed(b"0")
    decoder.feed(b"0")
    with pytest.raises(NetstringError, match="too long"):
        decoder.feed(b"0")


def test_request_of_exactly_10000_bytes_is_accepted() -> None:
    payload = b"postfix " + b"a" * (10_000 - 8)
    assert NetstringDecoder().feed(encode_netstring(payload)) == [payload]


def test_request_of_10001_bytes_is_rejected() -> None:
    with pytest.raises(NetstringError, match="exceeds limit"):
        NetstringDecoder().feed(encode_netstring(b"a" * 10_001))


def test_custom_max_length() -> None:
    decoder = NetstringDecoder(max_length=5)
    assert decoder.feed(b"5:abcde,") == [b"abcde"]
    with pytest.raises(NetstringError, match="exceeds limit"):
        decoder.feed(b"6:")
    with pytest.raises(NetstringError, match="too long"):
        NetstringDecoder(max_length=5).feed(b"12")


def test_decoder_is_dead_after_an_error() -> None:
    decoder = NetstringDecoder()
    with pytest.raises(NetstringError):
        decoder.feed(b"x")
    with pytest.raises(NetstringError, match="closed after error"):
        decoder.feed(b"1:a,")


def test_complete_requests_before_garbage_are_lost_with_the_connection() -> None:
    """docs/conformance.md: PF-socketmap-framing-error: a framing error closes the connection;
    nothing after it is trusted."""
    with pytest.raises(NetstringError):
        NetstringDecoder().feed(b"1:a,x")


def test_request_split_at_first_space() -> None:
    assert parse_request(b"postfix example.com") == ("postfix", "example.com")
    assert parse_request(b"postfix [mail.example.com]:587") == ("postfix", "[mail.example.com]:587")
    assert parse_request(b"postfix a b") == ("postfix", "a b")


def test_key_case_is_kept() -> None:
    assert parse_request(b"postfix Example.COM.") == ("postfix", "Example.COM.")


def test_utf8_key_is_decoded() -> None:
    assert parse_request("postfix bücher.example".encode()) == ("postfix", "bücher.example")


def test_other_map_name_is_returned_not_rejected() -> None:
    assert parse_request(b"othermap example.com") == ("othermap", "example.com")


def test_request_without_space_has_an_empty_key() -> None:
    """No key means nothing to look up: the answer is NOTFOUND (docs/conformance.md:
    PF-socketmap-request), never a guess."""
    assert parse_request(b"example.com") == ("example.com", "")
    assert parse_request(b"") == ("", "")


def test_invalid_utf8_key_never_raises_and_cannot_be_a_domain() -> None:
    name, key = parse_request(b"postfix ex\xffample.com")
    assert name == "postfix"
    assert "\ufffd" in key
