"""One log format everywhere (issue 12 item 4): every log call of the package starts its
message with `event=<name>` and carries its details as `key=value` fields, so `journalctl`
output greps and parses the same way on the policy side and the TLS-RPT side."""

from __future__ import annotations

import ast
import re

from support import REPO_ROOT

PACKAGE = REPO_ROOT / "daemon" / "mta_sts_policyd"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
EVENT = re.compile(r"event=([a-z0-9-]+|%s)( [a-z_]+=|$)")


def _message(call: ast.Call) -> str | None:
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def log_calls() -> list[tuple[str, int, str | None]]:
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("log", "logger", "logging")
            ):
                calls.append((str(path.relative_to(PACKAGE)), node.lineno, _message(node)))
    return calls


def test_every_log_call_is_an_event_with_fields() -> None:
    calls = log_calls()
    assert len(calls) > 50  # the scan finds the package's log calls
    bad = [f"{p}:{n}: {m!r}" for p, n, m in calls if m is None or not EVENT.match(m)]
    assert bad == []


def test_the_rule_catches_prose() -> None:
    assert not EVENT.match("TLS report %s delivered to %s")
    assert EVENT.match("event=tlsrpt-report-delivered report_id=%s")
