"""Policy file parsing: RFC 8461 §3.2; docs/conformance.md: PF-reply-syntax, PF-match-patterns."""

from __future__ import annotations

import pytest

from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.sts import MAX_AGE_LIMIT, Mode, parse_policy
from support.rfc_examples import RFC_8461_EXAMPLE_POLICY

RFC_EXAMPLE = (
    b"version: STSv1\r\n"
    b"mode: enforce\r\n"
    b"mx: mail.example.com\r\n"
    b"mx: *.example.net\r\n"
    b"mx: backupmx.example.com\r\n"
    b"max_age: 604800\r\n"
)


def body(*lines: str, end: str = "\n") -> bytes:
    return "".join(line + end for line in lines).encode()


def enforce(*extra: str) -> bytes:
    return body("version: STSv1", "mode: enforce", "mx: mail.example.com", "max_age: 86400", *extra)


def invalid(data: bytes) -> PolicySyntaxError:
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(data)
    return info.value


def test_rfc_8461_section_3_2_example() -> None:
    assert parse_policy(RFC_EXAMPLE) == RFC_8461_EXAMPLE_POLICY


# --- RFC 8461 §3.2: required fields ---


@pytest.mark.parametrize("missing", ["version", "mode", "max_age"])
def test_each_missing_required_field_is_invalid(missing: str) -> None:
    fields = ["version: STSv1", "mode: testing", "mx: a.example", "max_age: 1"]
    error = invalid(body(*(f for f in fields if not f.startswith(missing + ":"))))
    assert f"'{missing}' is missing" in str(error)
    assert error.line == 0


@pytest.mark.parametrize("mode", ["enforce", "testing"])
def test_mx_is_required_unless_mode_none(mode: str) -> None:
    error = invalid(body("version: STSv1", f"mode: {mode}", "max_age: 86400"))
    assert "at least one 'mx'" in str(error) and mode in str(error)


def test_mode_none_needs_no_mx() -> None:
    policy = parse_policy(body("version: STSv1", "mode: none", "max_age: 86400"))
    assert policy.mode is Mode.NONE and policy.mx == ()


def test_empty_body_is_invalid() -> None:
    assert "'version' is missing" in str(invalid(b""))


@pytest.mark.parametrize("version", ["STSv2", "stsv1", "STSv1x", ""])
def test_version_must_be_stsv1(version: str) -> None:
    error = invalid(body(f"version: {version}", "mode: none", "max_age: 1"))
    assert error.line == 1 and "version must be 'STSv1'" in str(error)


@pytest.mark.parametrize("mode", ["Enforce", "ENFORCE", "enforced", "report", ""])
def test_mode_value_is_case_sensitive_and_closed(mode: str) -> None:
    error = invalid(body("version: STSv1", f"mode: {mode}", "mx: a.example", "max_age: 1"))
    assert error.line == 2 and "mode must be one of" in str(error)


@pytest.mark.parametrize("mode", list(Mode))
def test_every_mode_parses(mode: Mode) -> None:
    assert (
        parse_policy(body("version: STSv1", f"mode: {mode}", "mx: a.example", "max_age: 1")).mode
        is mode
    )


# --- RFC 8461 §3.2: grammar ---


def test_crlf_and_lf_and_no_final_newline_are_all_valid() -> None:
    lf = parse_policy(RFC_EXAMPLE.replace(b"\r\n", b"\n"))
    assert parse_policy(RFC_EXAMPLE) == lf
    assert parse_policy(RFC_EXAMPLE.rstrip(b"\r\n")) == lf
    assert parse_policy(RFC_EXAMPLE.replace(b"\r\n", b"\n").rstrip(b"\n")) == lf


def test_mixed_crlf_and_lf_is_valid() -> None:
    assert parse_policy(b"version: STSv1\r\nmode: none\nmax_age: 5\r\n").max_age == 5


@pytest.mark.parametrize(
    "data",
    [
        b"version: STSv1\rmode: none\rmax_age: 5\r",
        b"version: STSv1\nmode: none\rmax_age: 5\n",
        b"version: STSv1\nmode: none\nmax_age: 5\r",  # last line ends in a bare CR
        b"version: STSv1\r\r\nmode: none\nmax_age: 5\n",
    ],
)
def test_bare_cr_is_invalid(data: bytes) -> None:
    assert "bare CR" in str(invalid(data))


def test_any_field_order() -> None:
    policy = parse_policy(
        body("max_age: 86400", "mx: mail.example.com", "mode: enforce", "version: STSv1")
    )
    assert (policy.mode, policy.mx, policy.max_age) == (Mode.ENFORCE, ("mail.example.com",), 86400)
    assert policy.lines[0] == "max_age: 86400" and policy.lines[-1] == "version: STSv1"


def test_capitalised_key_is_an_unknown_extension() -> None:
    error = invalid(body("version: STSv1", "Mode: enforce", "mx: a.example", "max_age: 1"))
    assert "'mode' is missing" in str(error)


def test_whitespace_around_value_is_allowed() -> None:
    policy = parse_policy(
        body("version:STSv1  ", "mode:\t enforce\t", "mx:  a.example ", "max_age:1 ")
    )
    assert policy.mode is Mode.ENFORCE and policy.mx == ("a.example",)
    assert policy.lines == ("version: STSv1", "mode: enforce", "mx: a.example", "max_age: 1")


def test_space_before_colon_makes_an_invalid_key() -> None:
    error = invalid(body("version: STSv1", "mode : enforce"))
    assert error.line == 2 and "not a valid field name" in str(error)


# --- RFC 8461 §3.2; docs/conformance.md: PF-reply-syntax: unknown fields ---


def test_unknown_field_is_ignored() -> None:
    policy = parse_policy(enforce("foo_bar.baz: anything goes"))
    assert policy.mx == ("mail.example.com",)
    assert policy.lines[-1] == "foo_bar.baz: anything goes"


def test_extension_with_braces_does_not_invalidate() -> None:
    # The sts layer keeps the line; postfix.py decides whether it can be rendered safely.
    policy = parse_policy(enforce("note: see {here}"))
    assert policy.mode is Mode.ENFORCE and "note: see {here}" in policy.lines


def test_extension_with_utf8_value_is_ignored_but_kept_in_lines() -> None:
    assert "comment: grüße" in parse_policy(enforce("comment: grüße")).lines


@pytest.mark.parametrize("line", ["empty:", "ctrl: a\x01b", "del: a\x7f"])
def test_extension_with_malformed_value_is_ignored_and_not_in_lines(line: str) -> None:
    policy = parse_policy(enforce(line))
    assert policy.mx == ("mail.example.com",) and len(policy.lines) == 4


@pytest.mark.parametrize("key", ["_x", "-x", ".x", "a b", "a" * 33, "ключ", ""])
def test_key_that_is_no_valid_extension_name_is_invalid(key: str) -> None:
    error = invalid(enforce(f"{key}: value"))
    assert error.line == 5 and "not a valid field name" in str(error)


def test_longest_extension_name_is_fine() -> None:
    assert parse_policy(enforce("a" * 32 + ": x")).mode is Mode.ENFORCE


# --- RFC 8461 §3.2: first occurrence wins, except mx ---


def test_first_mode_wins() -> None:
    assert parse_policy(enforce("mode: testing")).mode is Mode.ENFORCE


def test_ignored_duplicates_are_not_validated() -> None:
    policy = parse_policy(enforce("mode: bogus", "max_age: -1", "version: nope"))
    assert (policy.mode, policy.max_age) == (Mode.ENFORCE, 86400)


def test_mx_accumulates_in_file_order() -> None:
    policy = parse_policy(enforce("mx: b.example.com", "mx: *.c.example.com"))
    assert policy.mx == ("mail.example.com", "b.example.com", "*.c.example.com")


def test_duplicate_extension_keeps_first_only_in_lines() -> None:
    policy = parse_policy(enforce("x: 1", "x: 2"))
    assert "x: 1" in policy.lines and "x: 2" not in policy.lines


def test_lines_leave_out_ignored_duplicates_and_keep_file_order() -> None:
    data = body(
        "mx: b.example", "version: STSv1", "mode: testing", "mode: enforce", "mx: A.example",
        "max_age: 0086400", "max_age: 5",
    )  # fmt: skip
    policy = parse_policy(data)
    assert policy.lines == (
        "mx: b.example",
        "version: STSv1",
        "mode: testing",
        "mx: A.example",  # as written
        "max_age: 0086400",  # as written, not clamped or normalised
    )
    assert policy.mx == ("b.example", "a.example")  # lower-cased for matching


# --- RFC 8461 §3.2: mx grammar ---


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("mail.example.com", "mail.example.com"),
        ("MAIL.Example.COM", "mail.example.com"),
        # PF-match-patterns: kept verbatim, postfix.py translates
        ("*.example.net", "*.example.net"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.example", "a-b.example"),
        ("localhost", "localhost"),
        ("1mail.example", "1mail.example"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_valid_mx_patterns(pattern: str, expected: str) -> None:
    assert parse_policy(
        body("version: STSv1", "mode: enforce", f"mx: {pattern}", "max_age: 1")
    ).mx == (expected,)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("mail.example.com.", "trailing '.'"),  # RFC 8461 §3.2
        ("mail_1.example.com", "'_'"),  # RFC 8461 §3.2
        ("*.*.example.com", "'*'"),  # RFC 8461 §3.2
        ("mail.*.example.com", "'*'"),
        ("*example.com", "'*'"),
        ("*", "'*'"),
        ("*.", "empty"),
        ("[192.0.2.1]", "address literal"),
        ("192.0.2.1", "IP address"),
        ("*.192.0.2", "IP address"),
        ("mail.bücher.example", "non-ASCII"),  # RFC 8461 §3.2
        ("-mail.example", "label '-mail'"),
        ("mail-.example", "label 'mail-'"),
        ("a..example", "label ''"),
        (".example", "label ''"),
        ("a" * 64 + ".example", "label"),
        ("mail example.com", "label"),
        (".".join(["a" * 63] * 4), "longer than 253"),
    ],
)
def test_invalid_mx_patterns(pattern: str, why: str) -> None:
    error = invalid(enforce(f"mx: {pattern}"))
    assert error.line == 5 and why in str(error) and "mx" in str(error)


def test_empty_mx_is_invalid() -> None:
    assert "empty" in str(invalid(enforce("mx:")))


# --- RFC 8461 §3.2: max_age ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),  # valid: use once, do not reuse (the cache decides)
        ("86400", 86400),
        ("0086400", 86400),  # leading zeros allowed
        (str(MAX_AGE_LIMIT), MAX_AGE_LIMIT),
        ("31557601", MAX_AGE_LIMIT),  # RFC 8461 §3.2: clamped
        ("9999999999", MAX_AGE_LIMIT),  # 10 digits: the most the ABNF allows
    ],
)
def test_accepted_max_age_values(value: str, expected: int) -> None:
    policy = parse_policy(body("version: STSv1", "mode: none", f"max_age: {value}"))
    assert policy.max_age == expected
    assert policy.lines[-1] == f"max_age: {value}"


@pytest.mark.parametrize(
    "value", ["99999999999", "-1", "+5", "1e5", "1.5", "", "seven", "1 2", "١٢"]
)
def test_invalid_max_age_values(value: str) -> None:
    error = invalid(body("version: STSv1", "mode: none", f"max_age: {value}"))
    assert error.line == 3 and "max_age must be 1 to 10 decimal digits" in str(error)


# --- RFC 8461 §3.2: strictness ---


def test_line_without_colon_is_invalid_and_named() -> None:
    error = invalid(enforce("this line has no colon"))
    assert error.line == 5
    assert str(error).startswith("line 5: no ':'")


@pytest.mark.parametrize("line", ["  mx: a.example", "\tmode: enforce", " x: y"])
def test_line_starting_with_whitespace_is_invalid(line: str) -> None:
    error = invalid(enforce(line))
    assert error.line == 5 and "starts with whitespace" in str(error)


def test_invalid_utf8_is_invalid_and_names_the_line() -> None:
    error = invalid(enforce().replace(b"mail.example.com", b"mail.\xff.com"))
    assert error.line == 3 and "UTF-8" in str(error) and "0xff" in str(error)


def test_encoded_surrogate_is_invalid_utf8() -> None:
    assert "UTF-8" in str(invalid(enforce("x: y").replace(b"y", b"\xed\xa0\x80")))


def test_leading_bom_is_stripped() -> None:
    assert parse_policy(b"\xef\xbb\xbf" + RFC_EXAMPLE) == parse_policy(RFC_EXAMPLE)


def test_bom_later_in_the_body_is_not_stripped() -> None:
    assert "not a valid field name" in str(invalid(enforce("\ufeffx: y")))


def test_blank_lines_anywhere_and_trailing_spaces_are_tolerated() -> None:
    data = (
        b"\r\n\nversion: STSv1   \n\n  \nmode: enforce\t\r\n\nmx: a.example \nmax_age: 1\n\n\n\r\n"
    )
    policy = parse_policy(data)
    assert policy.lines == ("version: STSv1", "mode: enforce", "mx: a.example", "max_age: 1")


def test_error_message_names_line_and_reason() -> None:
    error = invalid(b"version: STSv1\nmode: enforce\nmx: bad_name.example\nmax_age: 1\n")
    assert str(error) == (
        "line 3: mx 'bad_name.example' is not a valid pattern: '_' is not allowed in host names"
    )
    assert error.reason.startswith("mx 'bad_name.example'")


def test_long_garbage_is_shortened_in_the_message() -> None:
    error = invalid(enforce("x" * 5000))
    assert len(str(error)) < 200
