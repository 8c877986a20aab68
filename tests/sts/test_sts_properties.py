"""Hypothesis properties of the pure RFC 8461 core: robustness and render -> parse round trips."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.sts import (
    MAX_AGE_LIMIT,
    Mode,
    TxtAbsent,
    TxtInvalid,
    TxtRecord,
    mx_matches,
    parse_policy,
    parse_txt_record,
    patterns_matching,
    policy_domain_for_key,
    select_sts_record,
)
from mta_sts_policyd.sts.names import hostname_problem

# --- building blocks ---

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
label = st.text(alphabet="abz019-", min_size=1, max_size=12).map(lambda s: s.strip("-") or "a")
tld = st.text(alphabet="abcxyz", min_size=2, max_size=6)
hostname = st.builds(lambda ls, t: ".".join([*ls, t]), st.lists(label, min_size=1, max_size=3), tld)
wsp = st.text(alphabet=" \t", max_size=3)
ext_name = st.builds(
    str.__add__, st.sampled_from(ALNUM), st.text(alphabet="aZ9_.-", max_size=31)
).filter(lambda n: n not in ("id", "version", "mode", "max_age", "mx"))
# Interesting characters for both grammars, so random text reaches deep into the parsers.
grammar_text = st.text(alphabet="v=STSv1;id:mxode_ag.*-[]0129 \t\r\n\ufeffé\x00", max_size=80)


def random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.integers(0, 2 ** len(text) - 1))
    return "".join(c.upper() if flips >> i & 1 else c for i, c in enumerate(text))


# --- robustness ---


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=300), grammar_text.map(str.encode)))
def test_parse_policy_raises_only_policy_syntax_error(data: bytes) -> None:
    try:
        policy = parse_policy(data)
    except PolicySyntaxError as error:
        assert error.reason and error.line >= 0
    else:
        assert 0 <= policy.max_age <= MAX_AGE_LIMIT


@settings(max_examples=200)
@given(
    st.lists(
        st.lists(st.one_of(st.binary(max_size=40), grammar_text.map(str.encode)), max_size=4),
        max_size=4,
    )
)
def test_select_sts_record_never_raises(rrs: list[list[bytes]]) -> None:
    result = select_sts_record(rrs)
    assert isinstance(result, TxtRecord | TxtAbsent | TxtInvalid)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=80), grammar_text, grammar_text.map("v=STSv1;".__add__)))
def test_parse_txt_record_never_raises(text: str) -> None:
    result = parse_txt_record(text)
    if isinstance(result, TxtRecord):
        assert 1 <= len(result.id) <= 32 and result.id.isalnum() and result.id.isascii()
    else:
        assert result.reason


keyish = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="[]:.-_/aZ09éß。 ", max_size=30),
    hostname.map(lambda h: f"[{h}]:25"),
)


@settings(max_examples=300)
@given(keyish)
def test_policy_domain_for_key_never_raises_and_returns_a_lower_case_a_label(key: str) -> None:
    domain = policy_domain_for_key(key)
    if domain is not None:
        assert hostname_problem(domain) is None
        assert domain == domain.lower() and "." in domain
        assert policy_domain_for_key(domain) == domain  # idempotent


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=40), grammar_text), st.one_of(st.text(max_size=40), keyish))
def test_mx_matches_never_raises(pattern: str, host: str) -> None:
    assert mx_matches(pattern, host) == bool(patterns_matching([pattern], host))


# --- key normalisation ---


@given(st.data(), hostname, st.sampled_from(["", ":25", ":587", ":smtp"]))
def test_key_forms_of_one_domain_agree(data: st.DataObject, host: str, port: str) -> None:
    """RFC 8461 §3.4; docs/conformance.md: PF-key-forms: brackets, ports, case and a trailing dot do
    not change it."""
    shown = random_case(data.draw, host) + data.draw(st.sampled_from(["", "."]))
    assert policy_domain_for_key(shown + port) == host
    assert policy_domain_for_key(f"[{shown}]{port}") == host
    assert policy_domain_for_key("." + host) is None  # RFC 8461 §3.4


# --- mx matching ---


@given(st.data(), hostname)
def test_exact_host_always_matches_itself(data: st.DataObject, host: str) -> None:
    shown = random_case(data.draw, host) + data.draw(st.sampled_from(["", "."]))
    assert mx_matches(host, shown)
    assert mx_matches(random_case(data.draw, host), host)


@given(label, label, hostname)
def test_wildcard_covers_exactly_one_label(first: str, second: str, domain: str) -> None:
    pattern = "*." + domain
    assert mx_matches(pattern, f"{first}.{domain}")
    assert not mx_matches(pattern, domain)  # RFC 8461 §4.1
    assert not mx_matches(pattern, f"{first}.{second}.{domain}")  # RFC 8461 §4.1


# --- TXT record round trip ---


@st.composite
def rendered_txt(draw: st.DrawFn) -> tuple[list[list[bytes]], TxtRecord]:
    """A valid record (with noise RRs around it) and what parsing it must give."""
    record_id = draw(st.text(alphabet=ALNUM, min_size=1, max_size=32))
    value = st.text(alphabet="!:<>~aZ9_.-{}", min_size=1, max_size=20)
    extensions = draw(st.lists(st.tuples(ext_name, value), max_size=4))
    fields = [f"{n}={v}" for n, v in extensions]
    fields.insert(draw(st.integers(0, len(fields))), f"id={record_id}")
    text = "v=STSv1"
    for field in fields:
        text += draw(wsp) + ";" + draw(wsp) + field
    if draw(st.booleans()):
        text += draw(wsp) + ";" + draw(wsp)
    raw = text.encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=4)))
    strings = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    noise = draw(st.lists(st.sampled_from([[b"v=spf1 -all"], [b"v=STSv10; id=1"], []])))
    rrs = [*noise, strings]
    rrs.insert(0, rrs.pop()) if draw(st.booleans()) else None
    first: dict[str, str] = {}
    for name, ext_value in extensions:
        first.setdefault(name, ext_value)
    return rrs, TxtRecord(id=record_id, extensions=tuple(first.items()))


@given(rendered_txt())
def test_txt_record_round_trip(case: tuple[list[list[bytes]], TxtRecord]) -> None:
    rrs, expected = case
    assert select_sts_record(rrs) == expected


# --- policy round trip ---


@dataclass(frozen=True)
class Generated:
    body: bytes
    mode: Mode
    mx: tuple[str, ...]
    max_age: int
    lines: tuple[str, ...]


@st.composite
def rendered_policy(draw: st.DrawFn) -> Generated:
    """A valid policy rendered with every tolerated variation, and its expected parse."""
    mode = draw(st.sampled_from(list(Mode)))
    mx = draw(st.lists(st.tuples(st.booleans(), hostname), min_size=mode is not Mode.NONE))
    patterns = [("*." if wild else "") + random_case(draw, name) for wild, name in mx]
    max_age = draw(st.integers(0, 9_999_999_999))
    written_age = str(max_age).zfill(draw(st.integers(1, 10)))
    value = st.text(alphabet="!~aZ9 :{}é", min_size=1, max_size=12).map(
        lambda v: v.strip(" ") or "x"
    )
    extensions = draw(st.lists(st.tuples(ext_name, value), max_size=3, unique_by=lambda e: e[0]))
    fields = [
        ("version", "STSv1"),
        ("mode", str(mode)),
        ("max_age", written_age),
        *(("mx", p) for p in patterns),
        *extensions,
    ]
    fields = draw(st.permutations(fields))
    duplicates = [("mode", "bogus"), ("max_age", "-1"), ("version", "x")]
    # RFC 8461 §3.2: ignored, unchecked
    fields += draw(st.lists(st.sampled_from(duplicates), max_size=2))
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    text = "\ufeff" if draw(st.booleans()) else ""
    for key, field_value in fields:
        text += draw(st.sampled_from(["", terminator, " \t" + terminator]))
        text += f"{key}:{draw(wsp)}{field_value}{draw(wsp)}{terminator}"
    if draw(st.booleans()):
        text = text.removesuffix(terminator)
    first = {key for key, _ in fields if key != "mx"}
    lines = []
    for key, field_value in fields:
        if key == "mx" or key in first:
            lines.append(f"{key}: {field_value}")
            first.discard(key)
    return Generated(
        body=text.encode(),
        mode=mode,
        mx=tuple(v.lower() for k, v in fields if k == "mx"),
        max_age=min(max_age, MAX_AGE_LIMIT),
        lines=tuple(lines),
    )


@given(rendered_policy())
def test_policy_round_trip(case: Generated) -> None:
    policy = parse_policy(case.body)
    assert (policy.mode, policy.mx, policy.max_age) == (case.mode, case.mx, case.max_age)
    assert policy.lines == case.lines
    # The normalised `lines` are themselves a valid policy with the same meaning.
    assert parse_policy("\n".join(policy.lines).encode()) == policy
