"""The policy host's systemd unit: `systemd-analyze verify` is silent; only port binding allowed."""

from __future__ import annotations

from pathlib import Path

from test_systemd_units import values, verify, with_real_command

from support import REPO_ROOT

UNIT = "mta-sts-policyd-host.service"


def test_host_unit_verifies_without_any_warning(tmp_path: Path) -> None:
    unit = tmp_path / UNIT
    unit.write_text(with_real_command((REPO_ROOT / "systemd" / UNIT).read_text()))
    result = verify(unit)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_host_unit_may_bind_port_443_and_nothing_more() -> None:
    assert values(UNIT, "CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]
    assert values(UNIT, "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
    assert values(UNIT, "DynamicUser") == ["yes"]
    assert values(UNIT, "User") == ["mta-sts-policyd-host"]
