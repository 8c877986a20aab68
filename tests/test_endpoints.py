"""The one nameserver parser, shared by the config check and the DNS client."""

from __future__ import annotations

import pytest

from mta_sts_policyd.config.settings import config_from_mapping
from mta_sts_policyd.endpoints import parse_nameserver
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.net.dns_client import make_resolver


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1.2.3.4", ("1.2.3.4", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        (" 192.0.2.53 ", ("192.0.2.53", 53)),
        ("2001:DB8:0::53", ("2001:db8::53", 53)),  # canonical text
        ("[2001:db8::53]:65535", ("2001:db8::53", 65535)),
    ],
)
def test_nameserver_forms(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("localhost", "'localhost' is not an IP address"),
        ("ns.example:53", "'ns.example' is not an IP address"),
        ("", "'' is not an IP address"),
        ("127.0.0.1:0", "port '0': expected a number from 1 to 65535"),
        ("127.0.0.1:65536", "port '65536': expected a number"),
        ("1.2.3.4:dns", "port 'dns': expected a number"),
        ("1.2.3.4:", "port '': expected a number"),
        ("[::1]:", "port '': expected a number"),
        ("[::1]:-1", "port '-1': expected a number"),
        ("[::1", r"expected \[IPv6\] or \[IPv6\]:PORT"),
        ("[::1]x", r"expected \[IPv6\] or \[IPv6\]:PORT"),
        ("[::1]]:53", r"expected \[IPv6\]"),
        ("1.2.3.4.5", "'1.2.3.4.5' is not an IP address"),
    ],
)
def test_nameserver_bad_forms_say_what_is_wrong(spec: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"^discovery\.nameservers: '.*': {why}"):
        parse_nameserver(spec)


@pytest.mark.parametrize("spec", ["[::1]", "::1", "1.2.3.4", "[::1]:5353", "127.0.0.1:5353"])
def test_config_check_and_dns_client_read_a_nameserver_alike(spec: str) -> None:
    """The value the config check accepts is the server the resolver asks, and vice versa."""
    config_from_mapping({"discovery": {"nameservers": [spec]}})
    (server,) = make_resolver([spec], 1.0).nameservers
    assert (server.address, server.port) == parse_nameserver(spec)  # type: ignore[union-attr]


def test_config_names_the_bad_entry() -> None:
    with pytest.raises(ConfigError, match=r"^discovery\.nameservers\[1\]: '\[::1'"):
        config_from_mapping({"discovery": {"nameservers": ["127.0.0.1", "[::1"]}})
