"""MX host vs policy patterns: RFC 8461 §4.1, §5.1; docs/conformance.md: PF-match-patterns."""

from __future__ import annotations

import pytest

from mta_sts_policyd.sts import mx_matches, parse_policy, patterns_matching


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("mail.example.com", "mail.example.com"),
        # RFC 8461 §4.1: case and one trailing dot ignored
        ("mail.example.com", "MAIL.Example.COM."),
        ("MAIL.EXAMPLE.COM", "mail.example.com"),
        ("*.example.net", "mx1.example.net"),  # RFC 8461 §4.1: exactly one extra label
        ("*.example.net", "MX1.EXAMPLE.NET."),
        ("*.Example.Net", "mx1.example.net"),
        ("xn--bcher-kva.example", "bücher.example"),  # RFC 8461 §4.1: compared as A-labels
        ("xn--bcher-kva.example", "BÜCHER.example."),
        ("*.xn--bcher-kva.example", "mx.bücher.example"),
        ("mx.xn--bcher-kva.example", "mx.xn--bcher-kva.example"),
    ],
)
def test_matches(pattern: str, host: str) -> None:
    assert mx_matches(pattern, host)


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("*.example.net", "a.b.example.net"),  # RFC 8461 §4.1: two labels deeper
        ("*.example.net", "example.net"),  # RFC 8461 §4.1: the bare domain
        ("*.example.net", ".example.net"),
        ("*.example.net", "mx1.example.net.."),  # only one trailing dot is ignored
        ("*.example.net", "mx1.example.org"),
        ("*.example.net", "mx1example.net"),
        ("mail.example.com", "mail.example.com.evil"),
        ("mail.example.com", "mx.mail.example.com"),  # no implicit wildcard
        ("mail.example.com", "ail.example.com"),
        ("*.*.example.net", "a.b.example.net"),
        ("*.", "a"),
        ("*", "a"),
        ("*.example.net", "*.example.net"),  # a host is never a pattern
        ("mail.example.com", ""),
        ("mail.example.com", "."),
        ("", ""),
        ("mail.example.com", "mail..example.com"),
        ("mail.example.com", "a\udcff.example"),  # lone surrogate: not convertible
        ("mail.example.com", "a" * 300 + "é"),  # IDNA refuses (too long)
        ("bücher.example", "bücher.example"),  # patterns are A-labels; U-label pattern never
    ],
)
def test_no_match(pattern: str, host: str) -> None:
    assert not mx_matches(pattern, host)


def test_patterns_matching_keeps_pattern_order() -> None:
    patterns = ["*.example.net", "mx1.example.net", "backup.example.com", "*.mx1.example.net"]
    assert patterns_matching(patterns, "MX1.example.net.") == ["*.example.net", "mx1.example.net"]


def test_no_pattern_matches_gives_empty_list() -> None:
    assert patterns_matching(["mail.example.com", "*.example.net"], "mx.example.org") == []


def test_patterns_matching_on_garbage_host_is_empty() -> None:
    assert patterns_matching(["*.example.net"], "..") == []


def test_policy_patterns_feed_the_matcher() -> None:
    policy = parse_policy(
        b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.Example.NET\nmax_age: 1\n"
    )
    assert policy.mx == ("mail.example.com", "*.example.net")  # verbatim `*.`, lower-cased
    assert patterns_matching(policy.mx, "mx2.example.net") == ["*.example.net"]
    assert patterns_matching(policy.mx, "a.b.example.net") == []
