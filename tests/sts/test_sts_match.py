"""MX host vs policy patterns: spec A50, D.39-D.42."""

from __future__ import annotations

import pytest

from mta_sts_policyd.sts import mx_matches, parse_policy, patterns_matching


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("mail.example.com", "mail.example.com"),
        ("mail.example.com", "MAIL.Example.COM."),  # A50: case and one trailing dot ignored
        ("MAIL.EXAMPLE.COM", "mail.example.com"),
        ("*.example.net", "mx1.example.net"),  # A50: exactly one extra label
        ("*.example.net", "MX1.EXAMPLE.NET."),
        ("*.Example.Net", "mx1.example.net"),
        ("xn--bcher-kva.example", "bücher.example"),  # A50: compared as A-labels
        ("xn--bcher-kva.example", "BÜCHER.example."),
        ("*.xn--bcher-kva.example", "mx.bücher.example"),
        ("mx.xn--bcher-kva.example", "mx.xn--bcher-kva.example"),
    ],
)
def test_a50_matches(pattern: str, host: str) -> None:
    assert mx_matches(pattern, host)


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        ("*.example.net", "a.b.example.net"),  # D.40: two labels deeper
        ("*.example.net", "example.net"),  # D.41: the bare domain
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
def test_a50_d40_d41_no_match(pattern: str, host: str) -> None:
    assert not mx_matches(pattern, host)


def test_a50_patterns_matching_keeps_pattern_order() -> None:
    patterns = ["*.example.net", "mx1.example.net", "backup.example.com", "*.mx1.example.net"]
    assert patterns_matching(patterns, "MX1.example.net.") == ["*.example.net", "mx1.example.net"]


def test_d42_no_pattern_matches_gives_empty_list() -> None:
    assert patterns_matching(["mail.example.com", "*.example.net"], "mx.example.org") == []


def test_a50_patterns_matching_on_garbage_host_is_empty() -> None:
    assert patterns_matching(["*.example.net"], "..") == []


def test_d39_policy_patterns_feed_the_matcher() -> None:
    policy = parse_policy(
        b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.Example.NET\nmax_age: 1\n"
    )
    assert policy.mx == ("mail.example.com", "*.example.net")  # verbatim `*.`, lower-cased
    assert patterns_matching(policy.mx, "mx2.example.net") == ["*.example.net"]
    assert patterns_matching(policy.mx, "a.b.example.net") == []
