"""service/host_parts.py: the host's configuration becomes settings, and refusals name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta_sts_policyd.config.settings import Config, load_config
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.service.host_parts import (
    check_host,
    host_cert_dirs,
    host_extras,
    host_settings,
)


def config(tmp_path: Path, host: str, metrics: str = "") -> Config:
    path = tmp_path / "config.toml"
    path.write_text(f'[host]\nstate_dir = "{tmp_path / "host"}"\n{host}\n[metrics]\n{metrics}\n')
    return load_config(path)


def test_http_01_brings_its_plain_listeners_and_tls_alpn_01_none(tmp_path: Path) -> None:
    acme = 'acme_directory = "https://ca.test/dir"\nacme_names = ["MTA-STS.A.test."]\n'
    plain = host_settings(config(tmp_path, acme + 'acme_challenge = "http-01"'))
    assert plain.http_listen == (("0.0.0.0", 80), ("::", 80))
    assert plain.acme_names == ("mta-sts.a.test",)
    assert plain.acme_state == tmp_path / "host" / "acme"
    assert host_settings(config(tmp_path, acme)).http_listen == ()
    assert host_cert_dirs(config(tmp_path, acme))[-1] == tmp_path / "host" / "acme" / "certs"


@pytest.mark.parametrize(
    ("host", "metrics", "key"),
    [
        ('metrics_listen = "0.0.0.0:9465"', "", "host.metrics_listen"),
        ('metrics_listen = "9465"', "", "host.metrics_listen"),
        ('acme_directory = "https://ca.test/dir"\nacme_challenge = "http-01"\nhttp_listen = []', "",
         "host.http_listen"),
    ],
)  # fmt: skip
def test_bad_host_addresses_are_refused_naming_the_key(
    tmp_path: Path, host: str, metrics: str, key: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        loaded = config(tmp_path, host, metrics)
        host_settings(loaded)
        host_extras(loaded)
    assert str(refused.value).startswith(key)


def test_a_remote_metrics_address_needs_the_opt_in(tmp_path: Path) -> None:
    opted = config(tmp_path, 'metrics_listen = "0.0.0.0:9465"', "allow_remote = true")
    assert host_extras(opted) is not None
    assert host_extras(config(tmp_path, "")) is None  # no endpoint, no status loop


def test_every_bad_host_listener_is_named_by_its_index(tmp_path: Path) -> None:
    """As for `server.listen` (one rule, `check_listen_list`): each bad entry of `[host]
    listen` by its index, a `unix:` one too (the host serves TCP only), and one listed twice;
    `host` at start and `check-config` say the same."""
    loaded = config(
        tmp_path,
        'listen = ["nonsense", "127.0.0.1:8443", "unix:/run/x.sock", "[::1]:0", "127.0.0.1:8443"]',
    )
    for check in (check_host, host_settings):
        with pytest.raises(ConfigError) as refused:
            check(loaded)
        assert [p.partition(": ")[0] for p in refused.value.problems] == [
            "host.listen[0]",
            "host.listen[2]",
            "host.listen[3]",
            "host.listen",
        ]
        assert refused.value.problems[1].endswith("(TCP), got 'unix:/run/x.sock'")
        assert "127.0.0.1:8443 listed more than once" in refused.value.problems[3]
    with pytest.raises(ConfigError, match=r"^host\.listen: expected at least one"):
        host_settings(config(tmp_path, "listen = []"))
