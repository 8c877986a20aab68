"""Policy replies to Postfix (RFC 8461 §4.1, §5; docs/conformance.md: PF-socketmap-reply,
PF-match-patterns, PF-sts-attributes, PF-socketmap-size)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mta_sts_policyd.postfix.policy_reply import (
    NO_MX_MATCH,
    match_list,
    render_policy_reply,
    valid_mx_patterns,
)
from mta_sts_policyd.postfix.socketmap import (
    REPLY_NOTFOUND,
    reply_ok,
    reply_temp,
)
from mta_sts_policyd.sts.model import Mode, Policy
from support import TESTS_DIR
from support.rfc_examples import RFC_8461_EXAMPLE_POLICY

GOLDEN = TESTS_DIR / "golden" / "replies.json"

RFC_EXAMPLE = RFC_8461_EXAMPLE_POLICY


def enforce(*mx: str, extra: tuple[str, ...] = ()) -> Policy:
    lines = ("version: STSv1", "mode: enforce", *(f"mx: {m}" for m in mx), "max_age: 86400")
    return Policy(mode=Mode.ENFORCE, max_age=86400, mx=mx, lines=lines + extra)


def test_exact_example_with_attributes() -> None:
    want = (
        b"OK secure match=mail.example.com:.example.net:backupmx.example.com"
        b" servername=hostname policy_type=sts policy_domain=example.com"
        b" mx_host_pattern=mail.example.com mx_host_pattern=*.example.net"
        b" mx_host_pattern=backupmx.example.com { policy_string = version: STSv1 }"
        b" { policy_string = mode: enforce } { policy_string = mx: mail.example.com }"
        b" { policy_string = mx: *.example.net } { policy_string = mx: backupmx.example.com }"
        b" { policy_string = max_age: 604800 }"
    )
    assert render_policy_reply(RFC_EXAMPLE, "example.com", sts_attributes=True) == want


def test_exact_example_without_attributes() -> None:
    want = b"OK secure match=mail.example.com:.example.net:backupmx.example.com servername=hostname"
    assert render_policy_reply(RFC_EXAMPLE, "example.com", sts_attributes=False) == want


@pytest.mark.parametrize("mode", [Mode.TESTING, Mode.NONE])
@pytest.mark.parametrize("attrs", [True, False])
def test_testing_and_none_are_notfound(mode: Mode, attrs: bool) -> None:
    policy = Policy(mode=mode, max_age=86400, mx=("mail.example.com",), lines=("mode: x",))
    assert render_policy_reply(policy, "example.com", sts_attributes=attrs) == b"NOTFOUND "


def test_notfound_keeps_its_space() -> None:
    assert REPLY_NOTFOUND == b"NOTFOUND "


@pytest.mark.parametrize("data", ["", " ", " ,\t", "\r\n"])
def test_ok_with_empty_data_is_refused(data: str) -> None:
    with pytest.raises(ValueError, match="non-empty data"):
        reply_ok(data)


def test_ok_and_temp() -> None:
    assert reply_ok("secure match=a.example") == b"OK secure match=a.example"
    assert reply_temp("overloaded") == b"TEMP overloaded"
    assert reply_temp("bad\r\nthing\x00") == b"TEMP bad??thing?"


def test_wildcard_becomes_dot_pattern_without_mx_hosts() -> None:
    reply = render_policy_reply(enforce("*.example.net"), "example.net", sts_attributes=True)
    assert b" match=.example.net " in reply
    assert b"mx_host_pattern=*.example.net" in reply
    assert b"match=*." not in reply


def test_brace_lines_are_not_emitted() -> None:
    policy = enforce("mail.example.com", extra=("note: see {here}", "x: a}b", "ok: fine"))
    reply = render_policy_reply(policy, "example.com", sts_attributes=True)
    assert b"{here}" not in reply
    assert b"a}b" not in reply
    assert b"{ policy_string = ok: fine }" in reply
    assert reply.count(b"{") == reply.count(b"}")


@pytest.mark.parametrize("line", ["a:\tb", "a: b\r", "a: b\x00", " a: b", "a: b ", "", "a: \x7f"])
def test_lines_postfix_would_alter_are_not_emitted(line: str) -> None:
    policy = enforce("mail.example.com", extra=(line,))
    plain = render_policy_reply(enforce("mail.example.com"), "example.com", sts_attributes=True)
    assert render_policy_reply(policy, "example.com", sts_attributes=True) == plain


def test_non_ascii_extension_line_is_kept_as_utf8() -> None:
    policy = enforce("mail.example.com", extra=("note: grüße",))
    reply = render_policy_reply(policy, "example.com", sts_attributes=True)
    assert "{ policy_string = note: grüße }".encode() in reply


@pytest.mark.parametrize(
    "bad",
    [
        "host protocols=!TLSv1.3",
        "a}b.example.com",
        "{ policy_type = sts }",
        "a.example.com:.evil.example",
        "mail.example.com,tafile=/etc/passwd",
        "mail.example.com.",  # RFC 8461 §3.2 trailing dot
        "mail_1.example.com",  # RFC 8461 §3.2 underscore
        "*.*.example.com",  # RFC 8461 §3.2 second wildcard
        "*example.com",
        "-a.example.com",
        "a-.example.com",
        "a..example.com",
        "",
        "*.",
        ".example.com",
        "exämple.com",
        "\u212aelvin.example.com",  # Kelvin sign lower-cases to ASCII "k"
        "a" * 64 + ".example.com",
        "mail.example.com\n",
    ],
)
def test_invalid_mx_patterns_never_reach_the_reply(bad: str) -> None:
    policy = enforce("mail.example.com", bad)
    want = b"OK secure match=mail.example.com servername=hostname"
    assert render_policy_reply(policy, "example.com", sts_attributes=False) == want
    assert valid_mx_patterns([bad]) == []


def test_policy_without_valid_patterns_is_notfound() -> None:
    policy = enforce("host protocols=!TLSv1.3", "a}b")
    assert render_policy_reply(policy, "example.com", sts_attributes=True) == REPLY_NOTFOUND
    assert render_policy_reply(enforce(), "example.com", sts_attributes=False) == REPLY_NOTFOUND


def test_patterns_are_lowercased_and_deduplicated() -> None:
    policy = enforce("Mail.Example.COM", "mail.example.com", "*.Example.net", "*.example.net")
    reply = render_policy_reply(policy, "Example.COM.", sts_attributes=True)
    assert reply.startswith(
        b"OK secure match=mail.example.com:.example.net servername=hostname policy_type=sts"
        b" policy_domain=example.com mx_host_pattern=mail.example.com"
        b" mx_host_pattern=*.example.net {"
    )


def test_mx_hosts_narrow_wildcards_to_one_label() -> None:
    hosts = ["b.example.net.", "A.Example.NET", "x.y.example.net", "example.net", "other.test"]
    assert match_list(["*.example.net"], hosts) == ["a.example.net", "b.example.net"]


def test_deeper_and_bare_names_are_not_wildcard_hits() -> None:
    reply = render_policy_reply(
        enforce("*.example.net"),
        "example.net",
        sts_attributes=False,
        mx_hosts=["a.b.example.net", "example.net", "mx1.example.net"],
    )
    assert reply == b"OK secure match=mx1.example.net servername=hostname"


def test_wildcard_without_mx_data_falls_back_to_dot_pattern() -> None:
    policy = enforce("mail.example.com", "*.example.net")
    reply = render_policy_reply(policy, "example.com", sts_attributes=False, mx_hosts=None)
    assert reply == b"OK secure match=mail.example.com:.example.net servername=hostname"


@pytest.mark.fault
def test_wildcard_matching_no_mx_adds_nothing_with_mx_data() -> None:
    """Issue 11 item 1a: MX data exists, the wildcard matches none of it (the only MX is two
    labels deep): never the any-depth `.example.net`, which would let that MX in."""
    policy = enforce("mail.example.com", "*.example.net")
    for hosts in ([], ["mail.example.com"], ["a.b.example.net"]):
        reply = render_policy_reply(policy, "example.com", sts_attributes=False, mx_hosts=hosts)
        assert reply == b"OK secure match=mail.example.com servername=hostname"


@pytest.mark.fault
def test_no_mx_matching_any_pattern_refuses_every_certificate() -> None:
    reply = render_policy_reply(
        enforce("*.mx.example.net"), "example.net", sts_attributes=False,
        mx_hosts=["a.b.mx.example.net"],
    )  # fmt: skip
    assert reply == f"OK secure match={NO_MX_MATCH} servername=hostname".encode()
    assert NO_MX_MATCH.endswith(".invalid")  # RFC 6761: no CA issues names under it


def test_mx_hosts_keep_exact_patterns_and_dedupe() -> None:
    policy = enforce("mx1.example.net", "*.example.net")
    hosts = ["mx2.example.net", "mx1.example.net"]
    assert match_list(valid_mx_patterns(policy.mx), hosts) == ["mx1.example.net", "mx2.example.net"]


def test_invalid_mx_host_names_are_ignored() -> None:
    hosts = ["a:b.example.net", "c d.example.net", "x_y.example.net", "ok.example.net"]
    assert match_list(["*.example.net"], hosts) == ["ok.example.net"]
    reply = render_policy_reply(
        enforce("*.example.net"), "example.net", sts_attributes=False, mx_hosts=hosts
    )
    assert reply == b"OK secure match=ok.example.net servername=hostname"


def test_mx_host_order_does_not_change_the_bytes() -> None:
    policy = enforce("*.example.net", "*.example.org")
    hosts = ["c.example.net", "a.example.org", "a.example.net", "b.example.net"]
    first = render_policy_reply(policy, "example.net", sts_attributes=True, mx_hosts=hosts)
    second = render_policy_reply(
        policy, "example.net", sts_attributes=True, mx_hosts=list(reversed(hosts))
    )
    assert first == second
    assert b"match=a.example.net:b.example.net:c.example.net:a.example.org " in first


def test_mx_host_pattern_stays_the_rfc_pattern_when_narrowed() -> None:
    reply = render_policy_reply(
        enforce("*.example.net"), "example.net", sts_attributes=True, mx_hosts=["a.example.net"]
    )
    assert b"match=a.example.net " in reply
    assert b"mx_host_pattern=*.example.net " in reply


@pytest.mark.parametrize("domain", ["1234", "1.2.3.4", "exa mple.com", "a}b", "bücher.example", ""])
def test_invalid_policy_domain_drops_tlsrpt_attributes(domain: str) -> None:
    reply = render_policy_reply(enforce("mail.example.com"), domain, sts_attributes=True)
    assert reply == b"OK secure match=mail.example.com servername=hostname"


def test_size_cap_drops_policy_strings_first() -> None:
    policy = enforce("mail.example.com", extra=("note: " + "x" * 200,))
    full = render_policy_reply(policy, "example.com", sts_attributes=True)
    capped = render_policy_reply(policy, "example.com", sts_attributes=True, max_size=len(full) - 1)
    assert b"policy_string" not in capped
    assert capped.endswith(b"policy_domain=example.com mx_host_pattern=mail.example.com")
    exact = render_policy_reply(policy, "example.com", sts_attributes=True, max_size=len(full))
    assert exact == full


def test_size_cap_then_drops_all_tlsrpt_attributes() -> None:
    policy = enforce("mail.example.com")
    core = b"OK secure match=mail.example.com servername=hostname"
    reply = render_policy_reply(policy, "example.com", sts_attributes=True, max_size=len(core) + 5)
    assert reply == core


def test_reply_that_cannot_fit_is_notfound() -> None:
    policy = enforce("mail.example.com")
    assert render_policy_reply(policy, "example.com", sts_attributes=False, max_size=40) == (
        REPLY_NOTFOUND
    )


def test_64k_policy_secure_part_fits_default_cap() -> None:
    names = [f"mx{i:05d}.example-with-a-fairly-long-name.com" for i in range(1500)]
    lines = tuple(f"mx: {n}" for n in names)
    assert sum(len(line) + 1 for line in lines) > 64 * 1024 - 4096
    policy = Policy(mode=Mode.ENFORCE, max_age=86400, mx=tuple(names), lines=lines)
    reply = render_policy_reply(policy, "example.com", sts_attributes=True)
    assert len(reply) <= 100_000
    assert reply.startswith(b"OK secure match=mx00000.")
    assert b"policy_string" not in reply


def _policy_from_json(data: dict[str, Any]) -> Policy:
    return Policy(
        mode=Mode(data["mode"]),
        max_age=data["max_age"],
        mx=tuple(data["mx"]),
        lines=tuple(data["lines"]),
    )


def _golden_cases() -> list[Any]:
    doc = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["name"]) for case in doc["cases"]]


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_replies(case: dict[str, Any]) -> None:
    policy = _policy_from_json(case["policy"])
    got = render_policy_reply(
        policy,
        case["policy_domain"],
        sts_attributes=case["sts_attributes"],
        mx_hosts=case["mx_hosts"],
    )
    assert got.decode() == case["reply"]
