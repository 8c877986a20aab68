"""The id derived from a policy's canonical content: properties (hypothesis) and fixed cases."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.sts import Mode, parse_policy, parse_txt_record
from mta_sts_policyd.sts.model import TxtRecord
from mta_sts_policyd.tools.generate import render_policy
from mta_sts_policyd.tools.policy_id import (
    IdVerdict,
    canonical_policy,
    is_derived_id,
    judge_id,
    policy_id,
)

label = st.text(alphabet="abcxyz019", min_size=1, max_size=8)
host = st.builds(
    lambda ls, t: ".".join([*ls, t]),
    st.lists(label, min_size=1, max_size=3),
    st.sampled_from(["com", "net", "test"]),
)
pattern = st.one_of(host, host.map(lambda h: "*." + h))
modes = st.sampled_from([Mode.ENFORCE, Mode.TESTING])
max_ages = st.integers(min_value=0, max_value=31_557_600)


def _id(text: str) -> str:
    return policy_id(parse_policy(text.encode()))


@settings(max_examples=200)
@given(modes, st.lists(pattern, min_size=1, max_size=5), max_ages)
def test_the_id_is_a_valid_txt_id_and_recognised(mode: Mode, mx: list[str], age: int) -> None:
    record_id = _id(render_policy(mode, mx, age))
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", record_id)
    assert parse_txt_record(f"v=STSv1; id={record_id}") == TxtRecord(record_id)
    assert is_derived_id(record_id)


@settings(max_examples=200)
@given(modes, st.lists(pattern, min_size=1, max_size=5, unique=True), max_ages, st.randoms())
def test_formatting_does_not_change_the_id(
    mode: Mode, mx: list[str], age: int, rnd: object
) -> None:
    """Line ends, order, BOM, blank lines, repeated mx and case: same policy, same id."""
    plain = render_policy(mode, mx, age)
    shuffled = list(mx)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    lines = [f"mx:   {m.upper()}  " for m in shuffled] + [f"mx: {shuffled[0]}"]
    lines += [f"max_age: {age:010d}", "", f"mode: {mode}", "version: STSv1"]
    rnd.shuffle(lines)  # type: ignore[attr-defined]
    variant = "\ufeff" + "\n".join(lines)
    assert _id(variant) == _id(plain)


@settings(max_examples=200)
@given(
    modes,
    st.lists(pattern, min_size=1, max_size=4, unique=True),
    max_ages,
    st.sampled_from(["mode", "max_age", "add-mx", "drop-mx", "extension"]),
)
def test_any_change_makes_a_new_id(mode: Mode, mx: list[str], age: int, change: str) -> None:
    before = render_policy(mode, mx, age)
    if change == "mode":
        after = render_policy(Mode.TESTING if mode is Mode.ENFORCE else Mode.ENFORCE, mx, age)
    elif change == "max_age":
        after = render_policy(mode, mx, age + 1)
    elif change == "add-mx":
        after = render_policy(mode, [*mx, "added-host.example"], age)
    elif change == "drop-mx" and len(mx) > 1:
        after = render_policy(mode, mx[1:], age)
    else:
        after = before + "x-note: changed\r\n"
    assert _id(after) != _id(before)


def test_canonical_text_is_documented_form() -> None:
    policy = parse_policy(
        b"version: STSv1\nmode: enforce\nmx: B.example\nmx: a.example\n"
        b"x-b: 2\nx-a: 1\nmax_age: 0086400\nmode: testing\n"
    )
    assert canonical_policy(policy) == (
        "version: STSv1\nmode: enforce\nmax_age: 86400\nmx: a.example\nmx: b.example\n"
        "x-a: 1\nx-b: 2\n"
    )


def test_known_value_never_changes() -> None:
    """The scheme is a published format: ids generated today must verify forever."""
    text = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"
    assert policy_id(parse_policy(text)) == "mspd158676ce5f8ffd0c3d5bd7a22588"


def test_judge_id() -> None:
    served = parse_policy(b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 86400\n")
    edited = parse_policy(b"version: STSv1\nmode: enforce\nmx: b.example\nmax_age: 86400\n")
    assert judge_id(policy_id(served), served) is IdVerdict.MATCHES
    assert judge_id(policy_id(edited), served) is IdVerdict.NOT_BUMPED
    assert judge_id("20240101T000000", served) is IdVerdict.NOT_VERIFIABLE
    assert judge_id("mspd1xyz", served) is IdVerdict.NOT_VERIFIABLE
