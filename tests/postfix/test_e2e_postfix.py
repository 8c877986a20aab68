"""End to end (issue 6): Debian's Postfix 3.7 asks the daemon; the day's report is right.

One run (module fixture, ~10 s) in private network + mount namespaces (support.e2e_postfix_world):
Postfix's `smtp_tls_policy_maps` is the daemon's socketmap, MX records come from our DNS server
through the system resolver, receivers listen on port 25. Three recipient domains:

- enforce.test (enforce, MX with a valid certificate): 2 messages, delivered, Verified TLS.
- testing.test (testing, MX with a certificate for another name): 2 messages. The daemon answers
  NOTFOUND (RFC 8461 §5), so Postfix delivers at `may`; the shadow probe finds the name mismatch and
  the report labels the sessions `sts` with the testing policy (issue 6 §3). The MX answers the
  probe seconds late, so both sessions reach the daemon while the domain's first probe round
  (started by the very lookup of the first delivery) still runs: they wait for its verdict.
- expired.test (enforce, MX with an expired certificate): 1 message, deferred by Postfix.

The daemon reads the outcomes from Postfix's maillog_file (docs/conformance.md: PF-maillog-summary
and after), is stopped with SIGTERM (the store is flushed) and `report show --day D --json` gives
the reports asserted here. Needs root, Postfix and unshare (skipped otherwise; CI runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import TESTS_DIR
from support.daemon_process import subprocess_env
from support.e2e_postfix_world import DOMAINS, RESULT_NAME
from support.postfix_instance import POSTFIX, postfix_available
from support.tlsrpt_validate import validate_report

pytestmark = pytest.mark.slow

WORLD_TIMEOUT = 120.0


def _namespaces_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = ["unshare", "--net", "--mount", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _run_world(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env["PYTHONPATH"]])
    argv = ["unshare", "--net", "--mount", "--propagation", "private"]
    argv += [sys.executable, "-m", "support.e2e_postfix_world", str(workdir)]
    proc = subprocess.Popen(
        argv,
        cwd=TESTS_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the daemon subprocess dies with the world on a timeout
    )
    try:
        out, _ = proc.communicate(timeout=WORLD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out)


def _stop_leftover_postfix(workdir: Path) -> None:
    """A killed world leaves Postfix's master running (it daemonizes): stop it by its pid file."""
    config = workdir / "postfix" / "etc"
    if (workdir / "postfix" / "queue" / "pid" / "master.pid").exists():
        cmd = [POSTFIX, "-c", str(config), "stop"]
        subprocess.run(cmd, capture_output=True, check=False, timeout=60)


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    if not postfix_available() or not _namespaces_available():
        pytest.skip("needs root, Postfix with its postfix user, unshare and ip")
    workdir = Path(tempfile.mkdtemp(prefix="e2e-pf-"))
    workdir.chmod(0o755)  # the postfix user must reach the instance below it
    try:
        done = _run_world(workdir)
        result_path = workdir / RESULT_NAME
        result: dict[str, Any] = json.loads(result_path.read_text()) if result_path.exists() else {}
        if done.returncode != 0 or "error" in result or "reports" not in result:
            print(done.stdout)
            print(result.get("postfix_log", ""), result.get("daemon_log", ""))
            pytest.fail(f"the e2e world failed ({done.returncode}): {result.get('error')}")
        yield result
    finally:
        _stop_leftover_postfix(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _policies(result: dict[str, Any], domain: str) -> list[dict[str, Any]]:
    """Every policy entry of `domain`'s reports (a run across midnight yields two reports)."""
    return [
        policy
        for report in result["reports"]
        for policy in report["policies"]
        if policy["policy"]["policy-domain"] == domain
    ]


def _sessions(entries: list[dict[str, Any]]) -> tuple[int, int]:
    ok = sum(p["summary"]["total-successful-session-count"] for p in entries)
    failed = sum(p["summary"]["total-failure-session-count"] for p in entries)
    return ok, failed


def _details(entries: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(result-type, receiving-mx-hostname, receiving-ip) -> failed sessions."""
    counts: dict[tuple[str, str, str], int] = {}
    for p in entries:
        for d in p.get("failure-details", []):
            key = (d["result-type"], d.get("receiving-mx-hostname", ""), d.get("receiving-ip", ""))
            counts[key] = counts.get(key, 0) + d["failed-session-count"]
    return counts


def _policy_objects(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unique = {json.dumps(p["policy"], sort_keys=True) for p in entries}
    return [json.loads(u) for u in sorted(unique)]


def _policy_lines(mode: str, mx: str) -> list[str]:
    return ["version: STSv1", f"mode: {mode}", f"mx: {mx}", "max_age: 86400"]


def test_postfix_delivered_as_the_daemon_told_it(world: dict[str, Any]) -> None:
    """RFC 8461 §5: enforce → `secure` (verified or deferred), testing → NOTFOUND (delivered at
    `may`)."""
    statuses = world["statuses"]
    assert [s.split("status=")[1].split()[0] for s in statuses["enforce.test"]] == ["sent"] * 2
    assert [s.split("status=")[1].split()[0] for s in statuses["testing.test"]] == ["sent"] * 2
    (expired,) = statuses["expired.test"]
    assert "dsn=4.7.5, status=deferred (Server certificate not verified)" in expired
    assert world["received"] == {"enforce.test": 2, "testing.test": 2, "expired.test": 0}
    log = world["postfix_log"]
    assert log.count("Verified TLS connection established to mx.enforce.test[127.0.0.2]:25") == 2
    assert "certificate has expired" in log
    assert world["daemon_exit"] == 0


def test_reports_cover_exactly_the_three_domains_and_pass_the_schema(
    world: dict[str, Any],
) -> None:
    """RFC 8460 §4: every report is valid RFC 8460 JSON; no stray domains or policies."""
    for report in world["reports"]:
        validate_report(report)
    domains = {p["policy"]["policy-domain"] for r in world["reports"] for p in r["policies"]}
    assert domains == {d.name for d in DOMAINS}
    types = {p["policy"]["policy-type"] for r in world["reports"] for p in r["policies"]}
    assert types == {"sts"}  # the testing domain too: no `no-policy-found` entry is left


def test_enforce_domain_counts_verified_sessions_as_successes(world: dict[str, Any]) -> None:
    """PF-maillog-summary: `Verified` at `secure` is a policy-compliant session (RFC 8460 §4.2)."""
    entries = _policies(world, "enforce.test")
    assert _policy_objects(entries) == [
        {
            "policy-type": "sts",
            "policy-string": _policy_lines("enforce", "mx.enforce.test"),
            "policy-domain": "enforce.test",
            "mx-host": ["mx.enforce.test"],
        }
    ]
    assert _sessions(entries) == (2, 0)
    assert _details(entries) == {}


def test_testing_domain_sessions_labeled_sts_with_the_probe_failure(
    world: dict[str, Any],
) -> None:
    """Issue 6 §3: Postfix delivered (NOTFOUND → may), the report says the MX would fail."""
    entries = _policies(world, "testing.test")
    assert _policy_objects(entries) == [
        {
            "policy-type": "sts",
            "policy-string": _policy_lines("testing", "mx.testing.test"),
            "policy-domain": "testing.test",
            "mx-host": ["mx.testing.test"],
        }
    ]
    assert _sessions(entries) == (0, 2)
    assert _details(entries) == {
        ("certificate-host-mismatch", "mx.testing.test", "127.0.0.3"): 2,
    }
    log = world["daemon_log"]
    assert "event=testing-sessions-released domain=testing.test sessions=" in log  # they waited
    assert "event=testing-hold-expired" not in log
    warning = "event=testing-mx-would-fail domain=testing.test mx=mx.testing.test"
    assert world["daemon_log"].count(warning) == 1  # once per domain, MX and day
    assert "result=certificate-host-mismatch" in world["daemon_log"]


def test_enforce_domain_with_expired_certificate_reported_as_certificate_expired(
    world: dict[str, Any],
) -> None:
    """PF-maillog-verify-failure: `server certificate verification failed ...: certificate has
    expired` (RFC 8460 §4.3)."""
    entries = _policies(world, "expired.test")
    assert [p["policy"]["policy-string"] for p in entries] == [
        _policy_lines("enforce", "mx.expired.test")
    ]
    assert entries[0]["policy"]["mx-host"] == ["mx.expired.test"]
    assert _sessions(entries) == (0, 1)
    assert _details(entries) == {("certificate-expired", "mx.expired.test", "127.0.0.4"): 1}
