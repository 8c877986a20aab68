"""config.py: every key validated with an error that names it; defaults; files; TOML round trip.

Issue 3 item 5: an empty file (or none) runs; an unknown key or a bad value is an error naming the
key and the expected form; `check-config` prints the effective config (render_toml), which must
read back as the same Config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from mta_sts_policyd.config import settings as config_module
from mta_sts_policyd.config.settings import (
    Config,
    config_and_problems,
    config_as_dict,
    config_from_mapping,
    load_config,
    parse_listen_address,
    render_toml,
    with_overrides,
)
from mta_sts_policyd.config.toml_schema import toml_value
from mta_sts_policyd.config.value_checks import CHECKS, RANGES
from mta_sts_policyd.errors import ConfigError
from support import REPO_ROOT

SAMPLE = REPO_ROOT / "postfix-examples" / "config.toml"


def all_keys(cls: Any = Config, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, type) for every leaf key of the config, nested tables included."""
    keys: list[tuple[str, Any]] = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(all_keys(hints[f.name], path))
        else:
            keys.append((path, hints[f.name]))
    return keys


def nested(path: str, value: Any) -> dict[str, Any]:
    """ "a.b.c", v -> {"a": {"b": {"c": v}}}."""
    data: dict[str, Any] = {}
    node = data
    *tables, key = path.split(".")
    for table in tables:
        node = node.setdefault(table, {})
    node[key] = value
    return data


def wrong_type_value(tp: Any) -> Any:
    """A TOML value of the wrong type for `tp`."""
    if get_origin(tp) is Literal:
        return "maybe"
    if get_origin(tp) is tuple:
        return "not-a-list"
    return {bool: "yes", int: "12", float: "1.5s", str: 5}[tp]


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    return str(info.value)


# --- every key ----------------------------------------------------------------------------------

LEAF_KEYS = all_keys()


def test_all_keys_found() -> None:
    """The walk below reaches nested tables too (tlsrpt.dkim), so no key escapes the tests."""
    names = {path for path, _ in LEAF_KEYS}
    assert {"server.listen", "cache.cold_wait", "tlsrpt.dkim.key_file", "maillog.path"} <= names
    assert len(names) == len(LEAF_KEYS) > 50


@pytest.mark.parametrize(("path", "tp"), LEAF_KEYS, ids=[p for p, _ in LEAF_KEYS])
def test_wrong_type_names_the_key_and_the_expected_form(path: str, tp: Any) -> None:
    message = config_error(nested(path, wrong_type_value(tp)))
    assert message.startswith(f"{path}: expected ")
    if get_origin(tp) is Literal:
        assert all(toml_value(a) in message for a in get_args(tp))


@pytest.mark.parametrize(("path", "tp"), LEAF_KEYS, ids=[p for p, _ in LEAF_KEYS])
def test_unknown_key_next_to_each_key_is_named(path: str, tp: Any) -> None:
    if "." not in path:
        pytest.skip("a top-level array of tables ([[own_domains]]): tested below")
    table, _, key = path.rpartition(".")
    message = config_error(nested(f"{table}.{key}_typo", 1))
    assert message.startswith(f"{table}.{key}_typo: unknown key")
    assert key in message  # the known keys are listed


@pytest.mark.parametrize(
    ("path", "tp"),
    [(p, t) for p, t in LEAF_KEYS if t in (int, float) and p not in ("cache.cold_wait",)],
    ids=[p for p, t in LEAF_KEYS if t in (int, float) and p != "cache.cold_wait"],
)
def test_booleans_are_not_numbers(path: str, tp: Any) -> None:
    assert config_error(nested(path, True)).startswith(f"{path}: expected ")


BAD_VALUES: dict[str, list[Any]] = {
    "reports_in.retention_days": [0, -1],
    "host.poll_interval": [0],
    "host.reports_max_bytes": [0, -1, 1 << 40],
    "host.status_interval": [0, -5.0, 1e9],
    "host.acme_challenge": ["dns-01", "tls-alpn", ""],
    "reports_in.quarantine_keep": [0],
    "reports_in.min_days": [0],
    "reports_in.min_organizations": [0],
    "reports_in.spool_interval": [0, -1.0, 1e9],
    "server.unix_mode": ["660x", "0999", "1777", ""],
    "server.max_connections": [0, -1],
    "server.idle_timeout": [0, -0.5],
    "discovery.dns_timeout": [0],
    "discovery.fetch_timeout": [0, 60.5, 600],
    "discovery.https_port": [0, 65536, -443],
    "cache.txt_recheck": [0],
    "cache.cold_wait": [-1],
    "cache.negative_ttl": [-1],
    "cache.failure_backoff": [-0.1],
    "cache.refresh_interval": [0],
    "cache.refresh_jitter": [-1],
    "cache.refresh_concurrency": [0],
    "cache.max_entries": [0],
    "cache.memory_entries": [-5],
    "cache.flush_interval": [0],
    "cache.state_dir": ["", "state", "./state"],
    "host.state_dir": ["", "  ", "host-state"],
    "host.policy_dir": ["", "policies", "./policies"],
    "tlsrpt.socket": ["tlsrpt.sock"],
    "probe.ehlo_name": ["mx one.example", "mx.example/x", "-mx.example", "[1.2.3.4"],
    "tlsrpt.socket_mode": ["rw-rw----", "8"],
    "tlsrpt.retention_days": [0],
    "tlsrpt.max_report_bytes": [0],
    "tlsrpt.send_delay_max": [-1],
    "tlsrpt.retry_window": [0],
    "tlsrpt.https_timeout": [0],
    "probe.reprobe_interval": [0],
    "probe.timeout": [-1],
    "probe.concurrency": [0],
    "probe.port": [0, 65536],
    "monitor.interval": [0],
    "monitor.jitter": [-1],
    "maillog.silence_alert": [-1],
    "fleet.heartbeat_interval": [0, 3601],
    "fleet.connect_timeout": [0],
    "fleet.command_timeout": [0, 61],
    "fleet.breaker_failures": [0],
    "fleet.breaker_reset": [0],
    "fleet.fetch_lock": [0],
    "fleet.entry_grace": [-1],
    "fleet.revalidate_interval": [0],
    "fleet.refresh_lease": [0],
    "fleet.refresh_batch": [0],
    "fleet.forget_after": [0],
    "fleet.snapshot_interval": [0],
    "fleet.report_settle": [-1],
    "fleet.report_deadline": [-1],
    "fleet.report_lease": [0, 86401],
    "fleet.redis": ["localhost:6379", "http://127.0.0.1"],
    "fleet.sentinels": [["127.0.0.1"], ["unix:/run/s.sock"], ["127.0.0.1:0"]],
    "fleet.key_prefix": ["", "a b"],
    "fleet.node_name": ["mx 1", "-mx1", "mx/1", "a" * 254],
    "server.listen": [
        [],
        ["8463"],
        ["localhost"],
        ["unix:relative/path"],
        ["[::1]:99999"],
        ["127.0.0.1:0"],  # port 0 would bind a random port that nobody is told of
        ["[::1]:0"],
    ],
    "metrics.listen": ["0.0.0.0:9463", "192.0.2.1:9463", "9463", "127.0.0.1:0"],
    "discovery.nameservers": [["dns.example"], ["127.0.0.1:0"], ["[::1]:x"]],
    "logging.level": ["TRACE", "verbose"],
    "server.sts_attributes": ["true", 1, "yes"],
}


NUMBER_KEYS = [(p, t) for p, t in LEAF_KEYS if t in (int, float)]
HUGE = 10**20
"""An integer TOML reads without complaint (it has no 64-bit limit in tomllib)."""


def test_bad_value_table_covers_every_value_check() -> None:
    assert set(CHECKS) <= set(BAD_VALUES)


def test_every_number_key_has_a_range() -> None:
    """Issue 11 item 18: a new int or float key without bounds fails here, not in `serve`."""
    assert {p for p, _ in NUMBER_KEYS} == set(RANGES)


def out_of_range_values(path: str, tp: Any) -> list[Any]:
    bounds = RANGES[path]
    values: list[Any] = [HUGE, -HUGE]
    if tp is float:
        values += [math.inf, -math.inf, math.nan, bounds.high * 1.5 + 1]
    else:
        values += [int(bounds.high) + 1]
    values.append(bounds.low if bounds.low_open else bounds.low - 1)
    return values


@pytest.mark.fault
@pytest.mark.parametrize(
    ("path", "value"),
    [(p, v) for p, t in NUMBER_KEYS for v in out_of_range_values(p, t)],
    ids=[f"{p}={v!r}" for p, t in NUMBER_KEYS for v in out_of_range_values(p, t)],
)
def test_numbers_out_of_range_name_the_key_and_the_range(path: str, value: Any) -> None:
    message = config_error(nested(path, value))
    bounds = RANGES[path]
    assert message.startswith(f"{path}: expected ")
    assert bounds.describe() in message
    assert f"got {value!r}" in message


PARTNERS = {"cache.memory_entries": "max_entries", "cache.max_entries": "memory_entries"}
"""Keys bound to each other (memory_entries <= max_entries): the other one is set to keep
the pair valid at either end of a range."""


@pytest.mark.parametrize(("path", "tp"), NUMBER_KEYS, ids=[p for p, _ in NUMBER_KEYS])
def test_both_ends_of_each_range_are_taken(path: str, tp: Any) -> None:
    bounds = RANGES[path]
    low = bounds.low + (1 if tp is int else 1e-3) if bounds.low_open else bounds.low
    for value in (tp(low), tp(bounds.high)):
        data = nested(path, value)
        if path in PARTNERS:  # as many kept at all as in memory; one in memory
            data["cache"][PARTNERS[path]] = value if path == "cache.memory_entries" else 1
        config = config_from_mapping(data)
        table, _, key = path.rpartition(".")
        assert config_as_dict(config)[table][key] == value


@pytest.mark.parametrize("text", ["", " "])
def test_an_empty_state_dir_is_refused(text: str) -> None:
    message = config_error({"cache": {"state_dir": text}})
    assert message.startswith("cache.state_dir: expected a directory path")


@pytest.mark.fault
def test_toml_inf_nan_and_huge_integers_are_refused_from_a_file(tmp_path: Path) -> None:
    """What `check-config` reads: TOML's own inf/nan literals and a 21-digit integer."""
    for line in ("flush_interval = inf", "cold_wait = nan", f"max_entries = {HUGE}"):
        path = tmp_path / "config.toml"
        path.write_text(f"[cache]\n{line}\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        key = line.split(" ")[0]
        assert f"cache.{key}: expected " in str(info.value)
        assert RANGES[f"cache.{key}"].describe() in str(info.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [(p, v) for p, values in BAD_VALUES.items() for v in values],
    ids=[f"{p}={v!r}" for p, values in BAD_VALUES.items() for v in values],
)
def test_bad_value_names_the_key(path: str, value: Any) -> None:
    message = config_error(nested(path, value))
    assert message.startswith(path)
    assert "expected" in message
    if not (isinstance(value, list) and not value):
        shown = str(value[0] if isinstance(value, list) else value)
        assert shown.rsplit(":", 1)[0] in message  # the value (or its host part) is quoted


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("server.unix_mode", "0600"),
        ("server.listen", ["[::1]:8463", "unix:/run/x.sock", "127.0.0.1:1"]),
        ("server.sts_attributes", True),
        ("server.sts_attributes", False),
        ("discovery.fetch_timeout", 60),
        ("discovery.nameservers", ["127.0.0.1", "127.0.0.1:5353", "[::1]:53", "::1"]),
        ("cache.cold_wait", 0),
        ("metrics.listen", "[::1]:9463"),
        ("metrics.listen", "localhost:9463"),
        ("logging.level", "DEBUG"),
    ],
)
def test_good_values_are_taken(path: str, value: Any) -> None:
    built = config_as_dict(config_from_mapping(nested(path, value)))
    table, _, key = path.rpartition(".")
    got = built[table][key]
    assert got == value
    assert type(got) is type(value) or (isinstance(value, int) and isinstance(got, float))


def test_integers_are_taken_for_floats_as_floats() -> None:
    config = config_from_mapping({"discovery": {"dns_timeout": 1}, "cache": {"cold_wait": 2}})
    assert config.discovery.dns_timeout == 1.0 and type(config.discovery.dns_timeout) is float
    assert type(config.cache.cold_wait) is float


def test_list_element_errors_name_the_index() -> None:
    assert config_error({"server": {"listen": ["127.0.0.1:1", 2]}}).startswith("server.listen[1]:")
    assert config_error({"discovery": {"nameservers": [53]}}).startswith("discovery.nameservers[0]")


def test_a_section_that_is_not_a_table() -> None:
    assert config_error({"server": "127.0.0.1:8463"}).startswith("server: expected a table")
    assert config_error({"tlsrpt": {"dkim": "x"}}).startswith("tlsrpt.dkim: expected a table")
    assert config_error({"srever": {}}).startswith("srever: unknown key (known keys here: cache,")


def test_parse_helpers() -> None:
    assert parse_listen_address("[::1]:8463", "k") == ("::1", 8463)
    assert parse_listen_address("unix:/run/p.sock", "k") == ("unix", 0)
    with pytest.raises(ConfigError, match=r"^--flag: expected HOST:PORT"):
        parse_listen_address("nope", "--flag")


# --- files and overrides ---------------------------------------------------------------------


def test_empty_file_runs_on_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# nothing set\n")
    assert load_config(path) == Config()
    assert Config().server.listen == ("127.0.0.1:8463",)


def test_no_file_at_the_default_path_runs_on_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_config(None) == Config()


def test_the_default_path_is_read_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[cache]\ncold_wait = 1\n")
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", path)
    assert load_config(None).cache.cold_wait == 1.0


def test_a_missing_named_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=f"^{path}: no such file$"):
        load_config(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"[server\n", "not valid TOML"),
        (b"listen = \xff\n", "not valid TOML"),
        (
            b'[server]\nlisten = "127.0.0.1:8463"\n',
            "server.listen: expected a list of strings, got",
        ),
        (b"[cache]\nstate_dir = 1\n", "cache.state_dir: expected a string, got 1"),
    ],
)
def test_file_errors_name_the_file_and_the_problem(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)  # a directory


def test_command_line_overrides() -> None:
    config = with_overrides(Config(), listen=["127.0.0.1:1", "unix:/x"], state_dir="/srv/state")
    assert config.server.listen == ("127.0.0.1:1", "unix:/x")
    assert config.state_dir == Path("/srv/state")
    assert config.discovery == Config().discovery
    assert with_overrides(Config()) == Config()
    with pytest.raises(ConfigError, match=r"^--listen: "):
        with_overrides(Config(), listen=["8463"])


def test_the_sample_file_is_the_defaults() -> None:
    assert load_config(SAMPLE) == Config()


# --- render_toml / config_as_dict --------------------------------------------------------------


def roundtrip(config: Config) -> Config:
    return config_from_mapping(tomllib.loads(render_toml(config)))


def test_render_toml_of_defaults_and_sample_reparses() -> None:
    assert roundtrip(Config()) == Config()
    text = render_toml(load_config(SAMPLE))
    assert "[tlsrpt.dkim]" in text and '[server]\nlisten = ["127.0.0.1:8463"]' in text


def test_config_as_dict_is_json() -> None:
    data = config_as_dict(Config())
    assert json.loads(json.dumps(data)) == data
    assert data["server"]["listen"] == ["127.0.0.1:8463"]
    assert data["tlsrpt"]["dkim"] == {"domain": "", "selector": "", "key_file": ""}


def test_render_toml_escapes_strings() -> None:
    """Control characters (a TOML "\\n" escape, say) must come back as they went in."""
    config = config_from_mapping(
        {"tlsrpt": {"organization_name": 'Ex "Q" \\ Ltd\n\t\x00\x7f', "contact_info": "é ☃"}}
    )
    assert roundtrip(config) == config


_OCTAL = st.integers(0, 0o777).map(lambda m: f"{m:04o}")
_PORT = st.integers(1, 65535)
_V4 = st.ip_addresses(v=4).map(str)
_V6 = st.ip_addresses(v=6).map(str)
_LISTEN = st.one_of(
    st.tuples(_V4, _PORT).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(_V6, _PORT).map(lambda t: f"[{t[0]}]:{t[1]}"),
    st.from_regex(r"\Aunix:/[a-z0-9/._-]{1,30}\Z"),
)
_NAMESERVER = st.one_of(
    _V4,
    st.tuples(_V4, st.integers(1, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(_V6, st.integers(1, 65535)).map(lambda t: f"[{t[0]}]:{t[1]}"),
)
_POSITIVE_FLOAT = st.floats(min_value=1e-3, max_value=1e12, allow_nan=False)
_SPECIAL: dict[str, st.SearchStrategy[Any]] = {
    "server.listen": st.lists(_LISTEN, min_size=1, max_size=3),
    "server.unix_mode": _OCTAL,
    "tlsrpt.socket_mode": _OCTAL,
    "discovery.nameservers": st.lists(_NAMESERVER, max_size=3),
    "metrics.listen": st.sampled_from(["", "127.0.0.1:9463", "[::1]:65535", "localhost:1"]),
    "maillog.timezone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
    "tlsrpt.contact_info": st.emails(),
    "own_domains": st.lists(
        st.fixed_dictionaries(
            {"domain": st.sampled_from(["example.com", "mail.example.org"])},
            optional={
                "expect_cname": st.lists(st.sampled_from(["sts.example.net"]), max_size=1),
                "expect_id": st.sampled_from(["", "20260101"]),
            },
        ),
        max_size=2,
    ),
}


def in_range(bounds: Any, tp: Any) -> st.SearchStrategy[Any]:
    low, high = bounds.low, bounds.high
    if tp is int:
        return st.integers(int(low) + int(bounds.low_open), int(high))
    return st.floats(low, high, exclude_min=bounds.low_open, allow_nan=False)


def value_strategy(path: str, tp: Any) -> st.SearchStrategy[Any]:
    if path in _SPECIAL:
        return _SPECIAL[path]
    if get_origin(tp) is Literal:
        return st.sampled_from(get_args(tp))
    if get_origin(tp) is tuple:
        return st.lists(value_strategy("", get_args(tp)[0]), max_size=3)
    if path in RANGES:
        return in_range(RANGES[path], tp)
    return {
        bool: st.booleans(),
        int: st.integers(1, 2**53),
        float: _POSITIVE_FLOAT,
        str: st.text(max_size=20),
    }[tp]


@st.composite
def config_data(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path, tp in LEAF_KEYS:
        if draw(st.booleans()):
            value = draw(value_strategy(path, tp))
            merged = nested(path, value)
            table = merged
            node = data
            while True:
                ((name, sub),) = table.items()
                if not isinstance(sub, dict):
                    node[name] = sub
                    break
                node = node.setdefault(name, {})
                table = sub
    return data


@settings(max_examples=100, deadline=None)
@given(config_data())
def test_render_toml_reparses_to_the_same_config(data: dict[str, Any]) -> None:
    try:
        config = config_from_mapping(data)
    except ConfigError:
        reject()  # cross-key rules (e.g. tlsrpt.enabled needs its sender settings)
    assert roundtrip(config) == config


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"monitor": {"alert_mail_to": ["not an address"]}}, "monitor.alert_mail_to[0]: expected"),
        ({"monitor": {"alert_mail_from": "nobody"}}, "monitor.alert_mail_from: expected an e-mail"),
        ({"tlsrpt": {"envelope_sender": "nope"}}, "tlsrpt.envelope_sender: expected an e-mail"),
        (
            {"own_domains": [{"domain": "example.com"}, {"domain": "EXAMPLE.com."}]},
            "own_domains[1].domain: 'EXAMPLE.com.' is own_domains[0]",
        ),
        (
            {"own_domains": [{"domain": "example.com", "expect_id": "not valid id!"}]},
            "own_domains[0].expect_id: expected 1 to 32 letters and digits",
        ),
        (
            {"own_domains": [{"domain": "example.com", "expect_cname": ["not a host"]}]},
            "own_domains[0].expect_cname[0]: expected a host name",
        ),
    ],
)
def test_mail_settings_and_own_domains_are_checked_at_load(data: dict[str, Any], said: str) -> None:
    assert said in config_error(data)


def test_more_policies_in_memory_than_kept_at_all_both_written_is_refused_naming_both() -> None:
    """Memory holds a part of the policies kept at all; which of the two was meant is unknown."""
    assert config_and_problems({"cache": {"memory_entries": 11, "max_entries": 10}})[1] == [
        "cache.memory_entries: 11 is more than cache.max_entries = 10 (the policies kept at"
        " all, those in memory among them): set cache.memory_entries to at most 10, or raise"
        " cache.max_entries"
    ]


@pytest.mark.parametrize(
    ("cache", "memory", "kept"),
    [({"max_entries": 1000}, 1000, 1000), ({"memory_entries": 300_000}, 300_000, 300_000),
     ({"max_entries": 9000}, 5000, 9000), ({"memory_entries": 7}, 7, 200_000)],
)  # fmt: skip
def test_a_cache_size_left_at_its_default_follows_the_written_one(
    cache: dict[str, int], memory: int, kept: int
) -> None:
    """A configuration that set only `max_entries = 1000` worked before both were checked
    together; its default `memory_entries` (5000) follows it rather than stop the daemon."""
    config = config_from_mapping({"cache": cache})
    assert (config.cache.memory_entries, config.cache.max_entries) == (memory, kept)


def test_as_many_policies_in_memory_as_kept_at_all_is_taken() -> None:
    config = config_from_mapping({"cache": {"memory_entries": 1000, "max_entries": 1000}})
    assert (config.cache.memory_entries, config.cache.max_entries) == (1000, 1000)
    refused = config_and_problems({"cache": {"memory_entries": 9000, "max_entries": 0}})[1]
    assert [p.split(":")[0] for p in refused] == ["cache.max_entries"]  # said once, by the loader


def test_own_domains_entries() -> None:
    config = config_from_mapping(
        {"own_domains": [{"domain": "example.com", "expect_cname": ["sts.example.net"]}]}
    )
    assert config.own_domains[0].expect_cname == ("sts.example.net",)
    assert config_error({"own_domains": [{"domain": "example.com", "typo": 1}]}).startswith(
        "own_domains[0].typo: unknown key"
    )
    assert config_error({"own_domains": [{"expect_id": "x"}]}).startswith(
        "own_domains[0].domain: required (the domain's name)"
    )
    assert config_error({"own_domains": [{"domain": "a b"}]}).startswith(
        "own_domains[0].domain: expected a domain name, got 'a b'"
    )
    both = config_error({"own_domains": ["example.com", 3]})
    assert "own_domains[0]: expected a table" in both and "own_domains[1]: expected" in both
    assert config_error({"own_domains": {"domain": "example.com"}}).startswith(
        "own_domains: expected an array of tables (a [[...]] block per entry)"
    )


REPORTING = {
    "enabled": True,
    "organization_name": "Example",
    "contact_info": "tlsrpt@example.test",
    "envelope_sender": "noreply@example.test",
    "allow_unsigned": True,
}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"own_domains": [{"domain": 5}]}, "own_domains[0].domain: expected a string, got 5"),
        (
            {"own_domains": [{"domain": "a.example"}, {"domain": ["b.example"]}]},
            "own_domains[1].domain: expected a string, got ['b.example']",
        ),
        (
            {"tlsrpt": {**REPORTING, "contact_info": 5}},
            "tlsrpt.contact_info: expected a string, got 5",
        ),
    ],
)
def test_a_key_of_the_wrong_type_is_one_problem(data: dict[str, Any], problem: str) -> None:
    """Not also "required": the checks across keys saw the key's default, not the file's value."""
    assert config_and_problems(data)[1] == [problem]


def test_reload_names_exactly_the_keys_that_need_a_restart() -> None:
    from mta_sts_policyd.service.reload import restart_only_changes

    old = Config()
    replace = dataclasses.replace
    new = replace(
        old,
        server=replace(old.server, listen=("127.0.0.1:1",), sts_attributes=True),
        cache=replace(old.cache, txt_recheck=30.0, memory_entries=10),
        discovery=replace(old.discovery, nameservers=("127.0.0.1:53",)),
        logging=replace(old.logging, level="DEBUG"),
        tlsrpt=replace(old.tlsrpt, retention_days=7),
    )
    assert restart_only_changes(old, new) == [
        "server.listen",
        "cache.memory_entries",
        "tlsrpt.retention_days",
    ]
    assert restart_only_changes(old, old) == []


def test_a_refused_boolean_is_shown_as_the_file_spells_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\nlisten = true\n[cache]\ncold_wait = false\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.problems)
    assert "server.listen: expected a list of" in text and "got true" in text
    assert "cache.cold_wait: expected" in text and "got false" in text
    assert "True" not in text and "False" not in text


@pytest.mark.parametrize("name", ["", "mx.example.net", "localhost", "[192.0.2.1]", "[IPv6:::1]"])
def test_an_ehlo_name_may_be_a_host_name_or_an_address_literal(tmp_path: Path, name: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[probe]\nehlo_name = {json.dumps(name)}\n")
    assert load_config(path).probe.ehlo_name == name


@pytest.mark.parametrize(
    ("path", "value", "floor"),
    [("fleet.heartbeat_interval", 0.001, "1"), ("fleet.snapshot_interval", 0.5, "1"),
     ("fleet.revalidate_interval", 0.001, "1"), ("fleet.breaker_reset", 0.001, "0.1"),
     ("fleet.fetch_lock", 0.001, "1"), ("fleet.refresh_lease", 0.001, "1"),
     ("fleet.report_lease", 0.001, "1"), ("cache.refresh_interval", 1.0, "30"),
     ("cache.txt_recheck", 0.01, "1"), ("cache.flush_interval", 0.001, "0.1"),
     ("host.poll_interval", 0.001, "0.1"), ("reports_in.spool_interval", 0.001, "0.1")],
)  # fmt: skip
def test_periods_too_short_to_mean_are_refused_naming_the_shortest(
    path: str, value: float, floor: str
) -> None:
    """`heartbeat_interval = 0.0001` was 8,000 Redis commands a second and a daemon that did
    not stop on SIGTERM; `refresh_interval = 1` refetches every policy every second."""
    assert config_error(nested(path, value)).startswith(
        f"{path}: expected a number of seconds from {floor} to "
    )


LITERAL_WORDS = [
    ("logging.level", "INFO"), ("logging.level", "DEBUG"), ("logging.target", "journal"),
    ("server.dane", "dane-only"), ("server.sts_attributes", "auto"),
    ("host.acme_challenge", "http-01"),
]  # fmt: skip


@given(
    key_word=st.sampled_from(LITERAL_WORDS),
    upper=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_a_word_from_a_fixed_list_is_taken_in_any_case_and_kept_in_one(
    key_word: tuple[str, str], upper: list[bool]
) -> None:
    """`level = "info"` is what operators write (Python's logging spells INFO): the value is
    taken whatever its case and read in the list's own spelling."""
    path, word = key_word
    written = "".join(c.upper() if up else c.lower() for c, up in zip(word, upper, strict=False))
    config = config_from_mapping(nested(path, written))
    table, _, key = path.rpartition(".")
    assert config_as_dict(config)[table][key] == word


def test_a_word_not_in_the_list_in_any_case_is_still_refused() -> None:
    assert config_error(nested("logging.level", "verbose")).startswith(
        'logging.level: expected one of "DEBUG", "INFO", "WARNING", "ERROR", got \'verbose\''
    )
