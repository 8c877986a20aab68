"""Property tests for the Postfix side (RFC 8461 §5; docs/conformance.md: PF-socketmap-netstring,
PF-reply-syntax, PF-sts-attributes).

`parse_postfix_policy` is a small test-side model of Postfix's policy-value parser
(`smtp_tls_policy.c`): it is what every rendered reply must survive.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.errors import NetstringError
from mta_sts_policyd.postfix.policy_reply import (
    NO_MX_MATCH,
    render_policy_reply,
    valid_mx_patterns,
)
from mta_sts_policyd.postfix.socketmap import REPLY_NOTFOUND, NetstringDecoder, encode_netstring
from mta_sts_policyd.sts.match import mx_matches
from mta_sts_policyd.sts.model import Mode, Policy

SEPARATORS = ", \t\r\n"
ATTRIBUTE_NAMES = {"match", "servername", "policy_type", "policy_domain", "mx_host_pattern"}
BRACED_NAMES = {"policy_string"}
HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class PostfixParseError(Exception):
    pass


def _brace_group(value: str, start: int) -> tuple[tuple[str, str], int]:
    """Parse `{ name = value }` starting at `start` (a `{`); braces must balance."""
    depth = 0
    for end in range(start, len(value)):
        depth += {"{": 1, "}": -1}.get(value[end], 0)
        if depth == 0:
            break
    else:
        raise PostfixParseError("unbalanced '{'")
    inner = re.sub(r"[\t\r\n]", " ", value[start + 1 : end])
    name, eq, val = inner.partition("=")
    if not eq or not name.strip():
        raise PostfixParseError(f"malformed attribute/value pair {inner!r}")
    return (name.strip().lower(), val.strip()), end + 1


def parse_postfix_policy(value: str) -> tuple[str, list[tuple[str, str]]]:
    """(level, [(attribute, value), ...]) as Postfix >= 3.10 would read a policy
    (docs/conformance.md: PF-reply-syntax)."""
    tokens: list[tuple[str, str] | str] = []
    pos = 0
    while pos < len(value):
        if value[pos] in SEPARATORS:
            pos += 1
        elif value[pos] == "{":
            pair, pos = _brace_group(value, pos)
            tokens.append(pair)
        else:
            end = pos
            while end < len(value) and value[end] not in SEPARATORS:
                end += 1
            token = value[pos:end]
            if "{" in token or "}" in token:
                raise PostfixParseError(f"stray brace in {token!r}")
            tokens.append(token)
            pos = end
    if not tokens or not isinstance(tokens[0], str):
        raise PostfixParseError("invalid empty policy")
    level, attrs = tokens[0], []
    for token in tokens[1:]:
        if isinstance(token, str):
            name, eq, val = token.partition("=")
            if not eq or not name:
                raise PostfixParseError(f"malformed attribute/value pair {token!r}")
            token = (name.lower(), val)
        attrs.append(token)
    return level.lower(), attrs


def test_model_parser_reads_the_spec_example() -> None:
    level, attrs = parse_postfix_policy(
        "secure match=a.example:.b.example servername=hostname { policy_string = mode: enforce }"
    )
    assert level == "secure"
    assert attrs == [
        ("match", "a.example:.b.example"),
        ("servername", "hostname"),
        ("policy_string", "mode: enforce"),
    ]


# --- netstrings ---------------------------------------------------------------------------

payloads = st.lists(st.binary(max_size=300), max_size=8)


def _feed_in_chunks(decoder: NetstringDecoder, wire: bytes, cuts: list[int]) -> list[bytes]:
    got: list[bytes] = []
    start = 0
    for cut in [*sorted(c % (len(wire) + 1) for c in cuts), len(wire)]:
        got += decoder.feed(wire[start:cut])
        start = max(start, cut)
    return got


@given(payloads, st.lists(st.integers(min_value=0, max_value=5000), max_size=20))
def test_round_trip_in_random_chunks(items: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_netstring(p) for p in items)
    decoder = NetstringDecoder()
    assert _feed_in_chunks(decoder, wire, cuts) == items
    assert decoder.buffered == 0


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_arbitrary_bytes_only_raise_netstring_error(data: bytes, cuts: list[int]) -> None:
    """Chunking never changes the outcome: same payloads, same error-or-not."""
    try:
        whole: list[bytes] | None = NetstringDecoder(max_length=50).feed(data)
    except NetstringError:
        whole = None
    try:
        chunked: list[bytes] | None = _feed_in_chunks(NetstringDecoder(max_length=50), data, cuts)
    except NetstringError:
        chunked = None
    assert whole == chunked
    assert all(len(p) <= 50 for p in whole or [])


@given(st.binary(min_size=1, max_size=60))
def test_oversized_netstrings_are_rejected(payload: bytes) -> None:
    decoder = NetstringDecoder(max_length=len(payload) - 1)
    try:
        decoder.feed(encode_netstring(payload))
    except NetstringError as exc:
        assert "exceeds limit" in str(exc) or "too long" in str(exc)
    else:
        raise AssertionError("oversized netstring accepted")


# --- replies ------------------------------------------------------------------------------

labels = st.text("abmxAMX019-", min_size=1, max_size=8).map(lambda s: s.strip("-") or "a")
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
patterns = st.one_of(domains, domains.map(lambda d: "*." + d), st.text(max_size=30))
policy_lines = st.one_of(
    st.text(max_size=40),
    patterns.map(lambda p: "mx: " + p),
    st.sampled_from(["version: STSv1", "mode: enforce", "max_age: 86400", "note: {x}"]),
)
policies = st.builds(
    Policy,
    mode=st.sampled_from(list(Mode)),
    max_age=st.integers(min_value=0, max_value=31_557_600),
    mx=st.lists(patterns, max_size=6).map(tuple),
    lines=st.lists(policy_lines, max_size=8).map(tuple),
)
mx_host_lists = st.one_of(
    st.none(), st.lists(st.one_of(domains, domains.map(lambda d: d + "."), st.text()), max_size=6)
)


@settings(max_examples=200)
@given(
    policies,
    st.one_of(domains, st.text(max_size=20)),
    st.booleans(),
    mx_host_lists,
    st.integers(min_value=9, max_value=2000),
)
def test_rendered_replies_parse_as_postfix_would(
    policy: Policy, domain: str, attrs: bool, hosts: list[str] | None, max_size: int
) -> None:
    reply = render_policy_reply(
        policy, domain, sts_attributes=attrs, mx_hosts=hosts, max_size=max_size
    )
    assert len(reply) <= max_size
    valid = valid_mx_patterns(policy.mx)
    if reply == REPLY_NOTFOUND:
        return
    assert policy.mode is Mode.ENFORCE
    assert valid
    assert reply.startswith(b"OK ")
    level, pairs = parse_postfix_policy(reply[3:].decode())
    assert level == "secure"
    names = [name for name, _ in pairs]
    assert set(names) <= (ATTRIBUTE_NAMES | BRACED_NAMES if attrs else {"match", "servername"})
    assert names[:2] == ["match", "servername"]
    assert names.count("match") == names.count("servername") == 1
    assert names.count("policy_type") <= 1
    assert ("policy_type" in names) == ("policy_domain" in names)
    if "policy_string" in names:
        assert "policy_type" in names
    values = dict(pairs[:2])
    assert values["servername"] == "hostname"
    _check_match_entries(values["match"].split(":"), valid, hosts)
    for name, value in pairs:
        if name == "mx_host_pattern":
            assert value in valid
        if name == "policy_string":
            assert value in policy.lines


def _check_match_entries(entries: list[str], valid: list[str], hosts: list[str] | None) -> None:
    """Every entry is a hostname or `.hostname` and is justified by a validated pattern
    (docs/conformance.md: PF-match-patterns)."""
    assert len(entries) == len(set(entries))
    if entries == [NO_MX_MATCH]:
        assert hosts is not None  # MX data, and none of it matched: refuse (RFC 8461 §4.1)
        return
    for entry in entries:
        name = entry[1:] if entry.startswith(".") else entry
        assert HOSTNAME_RE.fullmatch(name), entry
        if entry.startswith("."):
            assert hosts is None  # the any-depth form only without MX data (issue 11, 1a)
            assert "*" + entry in valid
        elif entry not in valid:
            assert hosts is not None
            assert any(mx_matches(p, entry) for p in valid if p.startswith("*."))


@given(policies, domains, st.booleans(), mx_host_lists)
def test_rendering_is_deterministic(
    policy: Policy, domain: str, attrs: bool, hosts: list[str] | None
) -> None:
    first = render_policy_reply(policy, domain, sts_attributes=attrs, mx_hosts=hosts)
    again = render_policy_reply(
        policy, domain, sts_attributes=attrs, mx_hosts=None if hosts is None else hosts[::-1]
    )
    assert first == again
