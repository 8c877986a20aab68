"""`_mta-sts` TXT record selection and parsing: RFC 8461 §3.1, §3.3."""

from __future__ import annotations

import pytest

from mta_sts_policyd.sts import (
    TxtAbsent,
    TxtInvalid,
    TxtRecord,
    parse_txt_record,
    select_sts_record,
)


def select(*records: bytes | tuple[bytes, ...]) -> object:
    """Run the selector on an RRset given as whole records or tuples of character-strings."""
    return select_sts_record([r if isinstance(r, tuple) else (r,) for r in records])


def reason_of(result: object) -> str:
    assert isinstance(result, TxtInvalid), result
    return result.reason


# --- RFC 8461 §3.1: US-ASCII only ---


def test_non_ascii_byte_makes_the_candidate_invalid() -> None:
    reason = reason_of(select(b"v=STSv1; id=abc; x=\xc3\xa9"))
    assert "non-ASCII" in reason
    assert "offset 19" in reason


def test_non_ascii_text_given_directly_is_invalid() -> None:
    assert "non-ASCII" in reason_of(parse_txt_record("v=STSv1; id=abc; x=é"))


def test_non_ascii_in_a_non_candidate_is_irrelevant() -> None:
    assert select(b"caf\xc3\xa9", b"v=STSv1; id=abc") == TxtRecord(id="abc")


# --- RFC 8461 §3.1: character-strings are joined without separator ---


def test_strings_of_one_rr_are_concatenated() -> None:
    assert select((b"v=STSv1; id=2019", b"0429")) == TxtRecord(id="20190429")


def test_split_id_is_joined() -> None:
    assert select((b"v=STSv1; id=20", b"26")) == TxtRecord(id="2026")


def test_split_inside_the_version_still_is_a_candidate() -> None:
    assert select((b"v=ST", b"Sv1;", b" id=x")) == TxtRecord(id="x")


def test_rr_without_strings_is_not_a_candidate() -> None:
    assert isinstance(select_sts_record([()]), TxtAbsent)


# --- RFC 8461 §3.1: candidate filter (erratum 6285) ---


def test_spf_record_next_to_sts_record_is_discarded() -> None:
    assert select(b"v=spf1 -all", b"v=STSv1; id=A1") == TxtRecord(id="A1")


@pytest.mark.parametrize(
    "record",
    [
        b"v=STSv1 ; id=X",  # RFC 8461 §3.1: space before ';'
        b"v=STSv1\t;id=X",
        b"v=STSv1 \t ;\t id=X",
        b"v=STSv1;id=X",
    ],
)
def test_whitespace_before_first_semicolon_is_a_candidate(record: bytes) -> None:
    assert select(record) == TxtRecord(id="X")


@pytest.mark.parametrize(
    "record",
    [
        b" v=STSv1; id=1",  # RFC 8461 §3.1: leading space
        b"v=STSv10; id=1",  # RFC 8461 §3.1: other version
        b"V=STSv1; id=1",  # case-sensitive
        b"v=stsv1; id=1",
        b"v=STSv1",  # no ';' at all
        b"v=STSv1 id=1",
        b"v = STSv1; id=1",
    ],
)
def test_not_a_candidate_means_no_policy(record: bytes) -> None:
    assert isinstance(select(record), TxtAbsent)


def test_parse_refuses_text_that_is_no_candidate() -> None:
    assert "does not start with" in reason_of(parse_txt_record("v=STSv10; id=1"))


# --- RFC 8461 §3.1 grammar ---


@pytest.mark.parametrize(
    ("record", "expected_id"),
    [
        ("v=STSv1; id=a", "a"),
        ("v=STSv1; id=" + "A1" * 16, "A1" * 16),  # 32 characters, the maximum
        ("v=STSv1; id=abc;", "abc"),  # one trailing delimiter is valid
        ("v=STSv1; id=abc ; ", "abc"),
        ("v=STSv1;id=abc;\t", "abc"),
    ],
)
def test_valid_ids(record: str, expected_id: str) -> None:
    assert parse_txt_record(record) == TxtRecord(id=expected_id)


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ("v=STSv1; id=", "id ''"),
        ("v=STSv1; id=" + "a" * 33, "1-32"),  # RFC 8461 §3.1: 33 characters
        ("v=STSv1; id=abc-1", "1-32"),  # RFC 8461 §3.1: hyphen
        ("v=STSv1; id=abc_1", "1-32"),
        ("v=STSv1; id=abc.1", "1-32"),
        ("v=STSv1; id=a b", "1-32"),
    ],
)
def test_invalid_ids(record: str, words: str) -> None:
    assert words in reason_of(parse_txt_record(record))


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ("v=STSv1;; id=abc", "empty field"),
        ("v=STSv1; id=abc;;", "empty field"),
        ("v=STSv1; ;", "empty field"),
        ("v=STSv1; id=abc; x=a b", "space"),  # value with SP
        ("v=STSv1; id=abc; x=", "empty"),
        ("v=STSv1; id=abc; x=a=b", "'='"),
        ("v=STSv1; id=abc; x=a\x01", "control"),
        ("v=STSv1; id=abc; flag", "no '='"),
        ("v=STSv1; id=abc; _x=1", "field name"),
        ("v=STSv1; id=abc; " + "n" * 33 + "=1", "field name"),
        ("v=STSv1; id=abc ", "1-32"),  # strict ABNF: trailing SP needs a ';' before it
        ("v=STSv1; id=abc; x=1 ", "space"),
    ],
)
def test_malformed_fields_invalidate_the_record(record: str, words: str) -> None:
    assert words in reason_of(parse_txt_record(record))


def test_extension_name_rules() -> None:
    record = parse_txt_record("v=STSv1; id=abc; a-b_c.d=1; " + "N" * 32 + "=x")
    assert record == TxtRecord(id="abc", extensions=(("a-b_c.d", "1"), ("N" * 32, "x")))


def test_id_keyword_is_case_sensitive() -> None:
    reason = reason_of(parse_txt_record("v=STSv1; ID=abc"))
    assert "'id' is missing" in reason


# --- RFC 8461 §3.1: exactly one valid candidate ---


def test_no_records_at_all_is_absent() -> None:
    assert isinstance(select_sts_record([]), TxtAbsent)


def test_only_other_records_is_absent() -> None:
    assert isinstance(select(b"v=spf1 -all", b"google-site-verification=x"), TxtAbsent)


def test_two_candidates_even_with_same_id_is_invalid() -> None:
    reason = reason_of(select(b"v=STSv1; id=abc", b"v=STSv1; id=abc"))
    assert "2 TXT records" in reason and "exactly one" in reason


def test_two_candidates_one_of_them_broken_is_still_invalid() -> None:
    assert isinstance(select(b"v=STSv1; id=abc", b"v=STSv1;;"), TxtInvalid)


def test_single_invalid_candidate_is_invalid_not_absent() -> None:
    assert isinstance(select(b"v=spf1 -all", b"v=STSv1; id=abc-1"), TxtInvalid)


@pytest.mark.parametrize("record", ["v=STSv1", "v=STSv1;", "v=STSv1; ext=1"])
def test_missing_id_is_invalid(record: str) -> None:
    assert "'id' is missing" in reason_of(parse_txt_record(record))


def test_missing_id_through_the_selector() -> None:
    assert "'id' is missing" in reason_of(select(b"v=STSv1;"))
    # A bare "v=STSv1" has no ';', so RFC 8461 §3.1 does not count it as a candidate at all.
    assert isinstance(select(b"v=STSv1"), TxtAbsent)


# --- RFC 8461 §3.1: unknown fields are ignored ---


def test_extension_is_kept_aside_and_id_used() -> None:
    assert select(b"v=STSv1; id=X; ext=1") == TxtRecord(id="X", extensions=(("ext", "1"),))


def test_extension_before_id_is_fine() -> None:
    assert parse_txt_record("v=STSv1; foo=bar; id=abc") == TxtRecord(
        id="abc", extensions=(("foo", "bar"),)
    )


def test_duplicate_extension_keeps_its_first_value() -> None:
    record = parse_txt_record("v=STSv1; id=a; x=1; x=2")
    assert record == TxtRecord(id="a", extensions=(("x", "1"),))


# --- RFC 8461 §3.1: first id wins ---


def test_first_id_wins() -> None:
    assert parse_txt_record("v=STSv1; id=first; id=second") == TxtRecord(id="first")


def test_later_id_need_not_be_a_valid_id_but_must_be_a_field() -> None:
    assert parse_txt_record("v=STSv1; id=first; id=not-an-id") == TxtRecord(id="first")
    assert isinstance(parse_txt_record("v=STSv1; id=first; id=a b"), TxtInvalid)


# --- RFC 8461 §3.1: ids compare exactly ---


def test_id_case_is_preserved() -> None:
    upper, lower = parse_txt_record("v=STSv1; id=ABC"), parse_txt_record("v=STSv1; id=abc")
    assert isinstance(upper, TxtRecord) and isinstance(lower, TxtRecord)
    assert upper.id == "ABC" and upper.id != lower.id
