"""SIGHUP and the configuration file: the host takes in a changed acme_names (and
poll_interval), and says which other changed keys wait for a restart instead of ignoring them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mta_sts_policyd.config.settings import load_config
from mta_sts_policyd.host.run import PolicyHost
from mta_sts_policyd.service.host_parts import host_reconfigure, host_settings


def write(path: Path, names: list[str], listen: str = "127.0.0.1:8443", extra: str = "") -> None:
    root = path.parent
    quoted = ", ".join(f'"{n}"' for n in names)
    path.write_text(
        f'[cache]\nstate_dir = "{root / "state"}"\n'
        f'[host]\nstate_dir = "{root / "host"}"\npolicy_dir = "{root / "policies"}"\n'
        f'cert_dirs = []\nlisten = ["{listen}"]\nacme_directory = "https://ca.test/dir"\n'
        f"acme_names = [{quoted}]\n{extra}"
    )


def test_a_changed_acme_names_is_taken_in_and_the_rest_waits_for_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.toml"
    write(path, ["mta-sts.a.test"])
    started = load_config(path)
    host = PolicyHost(host_settings(started))
    reconfigure = host_reconfigure(started, path)
    assert host.renewal is not None and host.renewal.names == ("mta-sts.a.test",)
    caplog.set_level(logging.INFO)

    write(
        path,
        ["mta-sts.a.test", "MTA-STS.B.test."],
        listen="127.0.0.1:9443",
        extra="poll_interval = 2.5\n",
    )
    reconfigure(host)
    assert host.renewal.names == ("mta-sts.a.test", "mta-sts.b.test")
    assert host.settings.acme_names == host.renewal.names  # the gauges' listed names follow
    assert host.settings.poll_interval == 2.5
    assert host.settings.listen == (("127.0.0.1", 8443),)  # still bound to the old one
    messages = [r.getMessage() for r in caplog.records]
    assert "event=acme-names-changed added=mta-sts.b.test removed=-" in messages
    (pending,) = [m for m in messages if "event=reload-needs-restart" in m]
    assert "keys=host.listen " in pending and "acme_names" not in pending


def test_a_configuration_that_no_longer_loads_keeps_the_running_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.toml"
    write(path, ["mta-sts.a.test"])
    started = load_config(path)
    host = PolicyHost(host_settings(started))
    write(path, ["a.test"])  # not mta-sts.DOMAIN: refused
    host_reconfigure(started, path)(host)
    assert host.settings.acme_names == ("mta-sts.a.test",)
    (failed,) = [r for r in caplog.records if "event=reload-failed" in r.getMessage()]
    assert failed.levelno == logging.ERROR and "host.acme_names[0]" in failed.getMessage()
