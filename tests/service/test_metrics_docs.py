"""docs/metrics.md documents every exported metric (and nothing else); the example alert rules
and Grafana dashboard only use metrics that exist, and `promtool` (Debian's prometheus package,
installed by .ci/setup) accepts the rules and every dashboard query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mta_sts_policyd import metrics
from support import REPO_ROOT

DOC = REPO_ROOT / "docs" / "metrics.md"
RULES = REPO_ROOT / "contrib" / "prometheus" / "mta-sts-policyd.rules.yml"
DASHBOARD = REPO_ROOT / "contrib" / "grafana" / "mta-sts-policyd.json"
NAME = re.compile(r"\bmta_sts_policyd_[a-z_]+")
SUFFIXES = ("_bucket", "_sum", "_count")


def exported() -> set[str]:
    """Family names as scraped: counters end in _total. `monitor`'s per-domain gauges join the
    registry when their module is imported; import it so the set does not depend on test order."""
    import mta_sts_policyd.reports_in.gauges
    import mta_sts_policyd.tools.monitor.gauges  # noqa: F401

    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names | host_exported()


def host_exported() -> set[str]:
    """The policy host process's own registry ([host] metrics_listen), all gauges."""
    from mta_sts_policyd.host.certificates import CertificateSet
    from mta_sts_policyd.host.documents import PolicyDocuments
    from mta_sts_policyd.tools.host_status.gauges import HostedGauges

    gauges = HostedGauges(PolicyDocuments(Path("/nonexistent")), CertificateSet([]))
    return {family.name for family in gauges.registry().collect()}


def documented() -> set[str]:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    return {NAME.search(row).group(0) for row in rows if NAME.search(row)}  # type: ignore[union-attr]


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in exported():
            return name.removesuffix(suffix)
    return name


def test_the_table_lists_every_exported_metric_and_only_those() -> None:
    assert documented() == exported()


def dashboard_queries() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in data["panels"] for t in panel["targets"]]


def test_rules_and_dashboard_use_existing_metrics_only() -> None:
    used = set(NAME.findall(RULES.read_text()))
    for expr in dashboard_queries():
        used |= set(NAME.findall(expr))
    assert {base(n) for n in used} <= exported()
    assert len(dashboard_queries()) >= 10


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: install Debian's prometheus package (.ci/setup does)")
    return found


def check_rules(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_promtool_accepts_the_alert_rules() -> None:
    done = check_rules(RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 10 rules found" in done.stdout


def test_promtool_accepts_every_dashboard_query(tmp_path: Path) -> None:
    """Each query becomes a recording rule, which promtool parses as PromQL."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for n, expr in enumerate(dashboard_queries()):
        lines += [f"      - record: dashboard:q{n}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text("\n".join(lines) + "\n")
    done = check_rules(path)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(path.read_text().replace("sum(", "sum((", 1))
    assert check_rules(broken).returncode != 0  # the check can fail


def test_binding_beyond_loopback_needs_the_explicit_opt_in() -> None:
    from mta_sts_policyd.config.settings import config_from_mapping
    from mta_sts_policyd.errors import ConfigError

    with pytest.raises(ConfigError, match="allow_remote"):
        config_from_mapping({"metrics": {"listen": "0.0.0.0:9463"}})
    config = config_from_mapping({"metrics": {"listen": "0.0.0.0:9463", "allow_remote": True}})
    assert config.metrics.allow_remote
    with pytest.raises(ValueError, match="loopback"):
        metrics.start_metrics_server("0.0.0.0", 0)
    server = metrics.start_metrics_server("0.0.0.0", 0, allow_remote=True)
    try:
        assert server.host == "0.0.0.0"
    finally:
        server.close()
