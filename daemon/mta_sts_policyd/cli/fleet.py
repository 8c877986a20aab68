"""`fleet status`: the fleet as Redis shows it, without a running daemon (docs/fleet.md)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.output import escaped, fail, iso_time, plain, print_json, relative
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import FleetUnavailable


def add_fleet_parser(sub: Any, common: argparse.ArgumentParser, reader: Any) -> None:
    p = sub.add_parser("fleet", help="fleet mode: the nodes sharing one Redis")
    fsub = p.add_subparsers(dest="fleet_command", required=True, parser_class=type(p))
    status = fsub.add_parser(
        "status",
        parents=[common, reader],
        help="nodes, breakers, refresh queue, shared policies, report days (reads Redis)",
        description="Read the fleet's state straight from Redis ([fleet] of the configuration);"
        " no running daemon is needed. Exit 0 when Redis answered, 75 when it could not be"
        " read, 1 when fleet mode is off.",
    )
    status.set_defaults(handler=cmd_fleet_status)


def cmd_fleet_status(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.fleet_parts import fleet_enabled, read_fleet_status

    if not fleet_enabled(config):
        reason = "fleet mode is off (set [fleet] redis or sentinels in the configuration)"
        return fail("fleet status", reason, ExitCode.NOT_FOUND, as_json=args.json)
    try:
        status = read_fleet_status(config)
    except FleetUnavailable as exc:
        return fail("fleet status", str(exc), ExitCode.TEMPFAIL, as_json=args.json)
    if args.json:
        print_json({"ok": True, **status, "exit_code": int(ExitCode.OK)})
    else:
        print_status(status, time.time())
    return ExitCode.OK


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _last_snapshot(node: dict[str, Any], now: float) -> str:
    snapshots = node.get("snapshots") or {}
    if not snapshots:
        return "-"
    day = max(snapshots)
    return f"{day} ({relative(snapshots[day], now)})"


def print_status(status: dict[str, Any], now: float) -> None:
    print(f"redis: {status['redis']} (key prefix {status['key_prefix']})")
    nodes = status["nodes"]
    if nodes:
        head = ("NODE", "CONDITION", "LAST SEEN", "BREAKER", "QUEUED WRITES", "VERSION")
        rows: list[tuple[str, ...]] = [(*head, "LAST SNAPSHOT")]
        for n in nodes:
            rows.append((escaped(n["name"]), n["condition"], relative(n.get("last_seen"), now),
                         plain(n.get("breaker")), plain(n.get("queued_writes")),
                         escaped(plain(n.get("version"))), _last_snapshot(n, now)))  # fmt: skip
        _table(rows)
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n["condition"]] = counts.get(n["condition"], 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none seen"
    print(f"nodes: {len(nodes)} ({summary})")
    for n in nodes:
        if n.get("name_conflict"):
            print(
                f"name conflict: {escaped(n['name'])} is more than one running daemon (give each"
                " its own [fleet] node_name; their TLS-RPT counts are not uploaded until then)"
            )
    queue = status["refresh_queue"]
    print(f"refresh queue: {queue['depth']} domains, {queue['due_now']} due now")
    shared = status["shared_policies"]
    print(f"shared policies: {'' if shared['complete'] else 'at least '}{shared['count']}")
    print("TLS reports (UTC days):")
    for day in status["reports"]:
        snap = ", ".join(escaped(name) for name in day["snapshot_nodes"]) or "none"
        states = ", ".join(f"{k} {v}" for k, v in day.get("states", {}).items())
        print(f"  {day['day']}: counts from {snap}; {day['sent']} of {day['reports']} "
              f"reports sent{f' ({states})' if states else ''}")  # fmt: skip
    print(f"(as of {iso_time(status['now'])}; a node is gone after four missed heartbeats)")
