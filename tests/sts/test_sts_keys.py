"""Postfix lookup key -> policy domain: RFC 8461 §3.2, §3.4; docs/conformance.md: PF-key-forms."""

from __future__ import annotations

import pytest

from mta_sts_policyd.sts import policy_domain_for_key
from mta_sts_policyd.sts.keys import domain_for_name


@pytest.mark.parametrize(
    ("key", "domain"),
    [
        ("example.com", "example.com"),  # RFC 8461 §3.4: the next-hop domain itself
        # RFC 8461 §3.4: a subdomain is its own policy domain
        ("mail.example.com", "mail.example.com"),
        # RFC 8461 §3.4: smart host, brackets+port
        ("[relay.example.net]:587", "relay.example.net"),
        ("[smtp.relay.net]:587", "smtp.relay.net"),  # RFC 8461 §3.4
        ("[relay.example.net]", "relay.example.net"),  # PF-key-forms: MX lookup suppressed
        ("[relay.example.net]:smtp", "relay.example.net"),  # PF-key-forms: service name
        ("[relay.example.net]:submission", "relay.example.net"),
        ("example.com:587", "example.com"),  # PF-key-forms: MX lookup with a port
        ("example.com:smtp", "example.com"),  # PF-key-forms
        ("Example.COM.", "example.com"),  # PF-key-forms: case and trailing dot
        ("EXAMPLE.COM", "example.com"),
        ("[Relay.Example.NET.]:25", "relay.example.net"),
        ("bücher.example", "xn--bcher-kva.example"),  # RFC 8461 §3.2: U-label -> A-label
        ("BÜCHER.Example.", "xn--bcher-kva.example"),  # RFC 8461 §3.2: UTS 46 mapping lower-cases
        ("[bücher.example]:25", "xn--bcher-kva.example"),
        ("bücher.example:587", "xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),  # RFC 8461 §3.2: IDNA 2008, non-transitional (ß kept)
        ("bücher.example。", "xn--bcher-kva.example"),  # ideographic full stop as trailing dot
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("r3---sn-abc.example", "r3---sn-abc.example"),  # real-world LDH that IDNA would refuse
        ("1.example", "1.example"),
        ("ab--cd.bücher.example", "ab--cd.xn--bcher-kva.example"),  # only U-labels use IDNA
    ],
)
def test_key_gives_policy_domain(key: str, domain: str) -> None:
    assert policy_domain_for_key(key) == domain


@pytest.mark.parametrize(
    "key",
    [
        ".example.com",  # RFC 8461 §3.4: Postfix's parent-domain retry
        ".com",
        ".mail.example.com",
        "[.example.com]",
        "[192.0.2.1]",  # RFC 8461 §3.4
        "[192.0.2.1]:25",  # RFC 8461 §3.4
        "[ipv6:2001:db8::1]",  # RFC 8461 §3.4: RFC 5321 IPv6 literal
        "[IPv6:2001:db8::1]:25",
        "[2001:db8::1]",
        "[::1]:25",
        "192.0.2.1",  # bare addresses
        "192.0.2.1:25",
        "2001:db8::1",
        "::1",
        "[300.1.1.1]",  # not an address, not a domain either
        "/var/spool/postfix/private/lmtp",  # UNIX path
        "private/dovecot-lmtp",
        "",
        ".",
        "..",
        "[]",
        "[]:25",
        "[example.com",
        "example.com]",
        "[example.com]x",
        "[[example.com]]",
        "example.com:",
        "example.com:25:26",
        "example.com: 25",
        "exa mple.com",
        "example.com ",
        "example..com",
        "example.com..",
        "-example.com",
        "a_b.example",
        "localhost",  # single label: not a public domain
        "[mailhub]",
        "12345",
        "a\udcff.example",  # lone surrogate
        "bü_cher.example",  # IDNA refuses the U-label
        "a" * 64 + ".example",
        ".".join(["a" * 63] * 4),  # 255 characters
        "\x00",
        "example.com\n",
    ],
)
def test_keys_without_policy_domain(key: str) -> None:
    assert policy_domain_for_key(key) is None


def test_parent_retries_never_reach_the_parent_policy() -> None:
    """RFC 8461 §3.4: mail.example.com -> .example.com -> .com, only the first is looked up."""
    assert [policy_domain_for_key(k) for k in ("mail.example.com", ".example.com", ".com")] == [
        "mail.example.com",
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("例え.jp", "xn--r8jz45g.jp"),
        ("[example.com]", None),  # a Postfix key form, not a domain as a person writes it
        ("example.com:25", None),
        ("[192.0.2.1]", None),
        ("a..b", None),
        ("bad domain", None),
        ("localhost", None),
    ],
)
def test_domain_for_name_refuses_key_forms(text: str, expected: str | None) -> None:
    assert domain_for_name(text) == expected
