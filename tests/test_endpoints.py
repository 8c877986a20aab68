"""The one reader of endpoint text (listen addresses, nameservers, relays), shared by the
config check and the network code."""

from __future__ import annotations

import pytest

from mta_sts_policyd.config.settings import config_from_mapping, config_warnings
from mta_sts_policyd.endpoints import (
    nameserver_warning,
    parse_listen_address,
    parse_nameserver,
    parse_smtp_relay,
)
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


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("::1:5353", "for port 5353 on ::1 write [::1]:5353, or write [::1:5353] to keep"),
        (" 2001:db8::1:53 ", "for port 53 on 2001:db8::1 write [2001:db8::1]:53, or write"),
    ],
)
def test_an_ipv6_nameserver_whose_last_group_reads_as_a_port_is_warned_about(
    spec: str, hint: str
) -> None:
    """Read (as the documented syntax says) as the whole address on port 53, and said: the
    operator may have meant the port; brackets say which and silence it."""
    address = spec.strip()
    assert parse_nameserver(spec) == (address, 53)
    warning = nameserver_warning(spec, "discovery.nameservers[0]")
    assert warning is not None
    assert warning.startswith(f"discovery.nameservers[0]: {spec!r} is the address {address} on")
    assert hint in warning


@pytest.mark.parametrize(
    "spec",
    # public resolvers' addresses whose last group is digits, but whose rest is no address
    ["2001:4860:4860::8888", "2606:4700:4700::1111", "fe80::53", "::1", "::ffff:192.0.2.1",
     "[::1:5353]", "[::1]:5353", "127.0.0.1:5353", "192.0.2.53", "::1:ab", "2001:db8::1:0"],
)  # fmt: skip
def test_nameservers_that_read_one_way_only_are_not_warned_about(spec: str) -> None:
    parse_nameserver(spec)
    assert nameserver_warning(spec, "discovery.nameservers[0]") is None


def test_config_warnings_name_each_ambiguous_nameserver_by_index() -> None:
    config = config_from_mapping({"discovery": {"nameservers": ["::1", "::1:5353", "::2:53"]}})
    warnings = config_warnings(config)
    assert [w.split(":")[0] for w in warnings] == [
        "discovery.nameservers[1]",
        "discovery.nameservers[2]",
    ]


def test_config_names_the_bad_entry() -> None:
    with pytest.raises(ConfigError, match=r"^discovery\.nameservers\[1\]: '\[::1'"):
        config_from_mapping({"discovery": {"nameservers": ["127.0.0.1", "[::1"]}})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("localhost:25", ("localhost", 25)),
        ("relay.example.net", ("relay.example.net", 25)),  # was read as localhost:25
        ("relay.example.net:587", ("relay.example.net", 587)),
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[2001:db8::25]", ("2001:db8::25", 25)),
        ("[2001:db8::25]:587", ("2001:db8::25", 587)),
    ],
)
def test_smtp_relay_forms(spec: str, expected: tuple[str, int]) -> None:
    assert parse_smtp_relay(spec, "monitor.smtp_relay") == expected


@pytest.mark.parametrize(
    "spec", ["", "nonsense relay", "relay:99999", "relay:x", ":25", "2001:db8::25", "[::1", "a/b"]
)
def test_bad_smtp_relays_are_refused_at_load(spec: str) -> None:
    for key in ("monitor", "tlsrpt"):
        with pytest.raises(ConfigError, match=rf"{key}\.smtp_relay: "):
            config_from_mapping({key: {"smtp_relay": spec}})


def test_the_report_sender_and_the_alerts_read_the_relay_alike() -> None:
    from mta_sts_policyd.service.tlsrpt_parts import report_context

    config = config_from_mapping(
        {
            "tlsrpt": {
                "enabled": True,
                "organization_name": "Example",
                "contact_info": "tlsrpt@example.test",
                "envelope_sender": "noreply@example.test",
                "allow_unsigned": True,
                "smtp_relay": "relay.example.net",
            }
        }
    )
    delivery = report_context(config).delivery
    assert (delivery.smtp_host, delivery.smtp_port) == ("relay.example.net", 25)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("127.0.0.1:0", "'127.0.0.1:0': port '0': expected a number from 1 to 65535"),
        ("[::1]:0", "'\\[::1\\]:0': port '0': expected a number from 1 to 65535"),
        ("localhost:65536", "'localhost:65536': port '65536': expected a number"),
        ("127.0.0.1:\u00b2", "expected HOST:PORT, \\[IPv6\\]:PORT or unix:/path"),  # not int()
        ("8463", "expected HOST:PORT"),
    ],
)
def test_listen_address_port_is_1_to_65535(spec: str, why: str) -> None:
    """Port 0 would bind a random port that neither Postfix nor a scraper is told of."""
    with pytest.raises(ConfigError, match=rf"^server\.listen: .*{why}"):
        parse_listen_address(spec, "server.listen")
    assert parse_listen_address("[::1]:65535", "k") == ("::1", 65535)


@pytest.mark.parametrize("spec", ["::1", "::1:8463", "2001:db8::1:25", "fe80::1"])
def test_listen_address_ipv6_without_brackets_is_refused(spec: str) -> None:
    """Read as HOST:PORT, "::1" would be host "::" (every address) on port 1."""
    with pytest.raises(ConfigError, match=r"^server\.listen: .*IPv6 address goes in brackets"):
        parse_listen_address(spec, "server.listen")
    assert parse_listen_address("[::1]:8463", "k") == ("::1", 8463)
    assert parse_listen_address("127.0.0.1:8463", "k") == ("127.0.0.1", 8463)


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("2001:db8::1", "write [2001:db8::1]:PORT for the address 2001:db8::1"),
        ("fe80::1", "write [fe80::1]:PORT for the address fe80::1"),
        (
            "::1:9463",  # port 9463 on ::1, or the address ::1:9463: both are said
            "write [::1]:9463 for port 9463 on ::1, or [::1:9463]:PORT for the address ::1:9463",
        ),
        ("1:2:3:4:5:6:7:8:8463", "write [1:2:3:4:5:6:7:8]:8463 for port 8463 on 1:2:3:4:5:6:7:8"),
    ],
)
def test_the_bracket_hint_is_built_from_what_was_written(spec: str, hint: str) -> None:
    """The hint was always `[::1]:8463`, whatever address was written."""
    with pytest.raises(ConfigError) as raised:
        parse_listen_address(spec, "server.listen")
    assert raised.value.problems == (
        f"server.listen: {spec!r}: an IPv6 address goes in brackets: {hint}",
    )


@pytest.mark.parametrize("spec", ["a:b:c", "[::1]", "host:name:25"])
def test_colons_that_are_no_ipv6_address_get_the_expected_forms(spec: str) -> None:
    with pytest.raises(ConfigError, match="expected HOST:PORT, \\[IPv6\\]:PORT or unix:/path"):
        parse_listen_address(spec, "server.listen")


def test_postfix_inet_prefix_is_refused_in_the_file_and_dropped_on_the_command_line() -> None:
    """`inet:127.0.0.1:8463` (Postfix's map syntax, pasted from main.cf) was refused with the
    IPv6 message; a key says to drop `inet:`, `--listen`/`--socketmap` drop it themselves."""
    from mta_sts_policyd.cli.arguments import listen_address

    with pytest.raises(ConfigError) as raised:
        parse_listen_address("inet:127.0.0.1:8463", "server.listen")
    assert raised.value.problems == (
        "server.listen: 'inet:127.0.0.1:8463': drop 'inet:', Postfix's map syntax"
        " (write '127.0.0.1:8463')",
    )
    assert listen_address("inet:127.0.0.1:8463") == "127.0.0.1:8463"
    assert listen_address("inet:[::1]:8463") == "[::1]:8463"
    assert listen_address("unix:/run/x.sock") == "unix:/run/x.sock"
