"""The one A-label converter (IDNA 2008 + UTS 46) and the host-name rule built on it.

Every part that turns a name into its A-label (discovery, the Postfix key, MX matching, the
probe, libtlsrpt datagrams, report building) must give the same answer: a report for
`straße.de` belongs to `xn--strae-oqa.de`, not to `strasse.de` (IDNA 2003), a different domain.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mta_sts_policyd.discovery.client import _name as discovery_name
from mta_sts_policyd.errors import DnsLookupError, InvalidName
from mta_sts_policyd.sts import patterns_matching, policy_domain_for_key
from mta_sts_policyd.sts.names import host_name, to_a_label
from mta_sts_policyd.tlsrpt.libtlsrpt.datagram import parse_datagram
from mta_sts_policyd.tlsrpt.normalize import hostname as report_hostname
from mta_sts_policyd.tlsrpt.normalize import report_name


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("straße.de", "xn--strae-oqa.de"),  # IDNA 2008 keeps ß; IDNA 2003 made it strasse.de
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),  # UTS 46 maps upper case
        ("MX.Example.TEST", "mx.example.test"),
        ("r3---sn-x.example", "r3---sn-x.example"),  # ASCII labels are not IDNA-checked
        ("_smtp._tls.bücher.example", "_smtp._tls.xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("example.com.", "example.com."),  # nothing stripped: the caller's rule
    ],
)
def test_to_a_label(given_name: str, expected: str) -> None:
    assert to_a_label(given_name) == expected


@pytest.mark.parametrize("bad", ["a\u200db.example", "\ud800.example", "☃.example"])
def test_to_a_label_refuses_non_idna_names_and_says_why(bad: str) -> None:
    with pytest.raises(InvalidName, match="no IDNA 2008 A-label form"):
        to_a_label(bad)


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("MX.Example.TEST.", "mx.example.test"),
        ("bücher.example.test", "xn--bcher-kva.example.test"),
        ("_dmarc.example", "_dmarc.example"),
    ],
)
def test_host_name_rfc8461_4_1(given_name: str, expected: str) -> None:
    """RFC 8461 §4.1: compared case-insensitively as A-labels, one trailing dot ignored."""
    assert host_name(given_name) == expected


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        (".", "empty"),
        ("a b.example", "label 'a b'"),
        ("mx..example", "label ''"),
        ("-mx.example", "label '-mx'"),
        ("mx.example\x00", "label"),
        ("a" * 64 + ".test", "label"),
        ("a." * 127 + "test", "longer than 253"),
        ("*.example", "label '\\*'"),
    ],
)
def test_host_name_rejects_with_the_reason(bad: str, why: str) -> None:
    with pytest.raises(InvalidName, match=why):
        host_name(bad)


# --- every call site gives the same A-label --------------------------------------------------

_U_LETTERS = "abcxyz09ßüöéñçøæÜÖ中文ЖжΩω"
u_label = st.text(alphabet=_U_LETTERS, min_size=1, max_size=10)
u_name = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(u_label, min_size=1, max_size=3),
    st.sampled_from(["de", "example", "TEST", "médias"]),
)


def _datagram_names(name: str) -> tuple[str, str]:
    """The report domain and policy domain libtlsrpt's datagram parser records for `name`."""
    obj = {
        "dpv": "1",
        "d": name,
        "pr": "v=TLSRPTv1;rua=mailto:r@a.example",
        "policies": [{"policy-type": 2, "policy-domain": name, "t": 0, "f": 0}],
    }
    (event,) = parse_datagram(json.dumps(obj).encode(), 0.0)
    assert event.policy.policy_domain is not None
    return event.report_domain, event.policy.policy_domain


@settings(max_examples=300, deadline=None)
@given(u_name)
def test_every_call_site_agrees_on_the_a_label(name: str) -> None:
    try:
        expected = host_name(name)
    except InvalidName:
        assume(False)
        raise
    assert to_a_label(name) == expected
    assert discovery_name(name, DnsLookupError) == expected
    assert policy_domain_for_key(name) == expected
    assert policy_domain_for_key(f"[{name}]:25") == expected
    assert patterns_matching([expected], name) == [expected]
    assert _datagram_names(name) == (expected, expected)
    assert report_name(name) == expected
    assert report_hostname(name) == expected
