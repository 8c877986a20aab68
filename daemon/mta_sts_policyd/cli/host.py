"""`mta-sts-policyd host` (serve) and `host status` (is every served domain delegated to this
host, published with the served policy's id, and covered by a valid certificate?).

`host status` exits like `check` (Nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mta_sts_policyd.cli.arguments import days_left, nameserver
from mta_sts_policyd.cli.output import fail
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.host.documents import folder_problem
from mta_sts_policyd.tools.check.findings import NagiosStatus, Severity, worst_status
from mta_sts_policyd.tools.check.observations import Options
from mta_sts_policyd.tools.host_status.judge import HostedReport, judge_all, utc_text
from mta_sts_policyd.tools.host_status.observe import observe_hosted, served


def add_host_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("host", parents=[common], help="serve your policies over HTTPS")
    p.add_argument(
        "action",
        nargs="?",
        choices=["serve", "status"],
        default="serve",
        help="serve (the default), or status: delegation, TXT id and certificate per domain",
    )
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.add_argument(
        "--nameserver",
        action="append",
        type=nameserver,
        metavar="IP[:PORT]",
        help="status: DNS server to ask (default: [discovery] nameservers)",
    )
    p.add_argument("--policy-cert-warning-days", type=days_left, default=21)
    p.add_argument("--policy-cert-critical-days", type=days_left, default=7)
    p.set_defaults(handler=host_command)


def host_command(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.host.run import run_host
    from mta_sts_policyd.service.host_parts import (
        host_extras,
        host_reconfigure,
        host_settings,
        make_host_intake,
    )
    from mta_sts_policyd.service.logsetup import setup_logging

    if args.action == "status":  # its report says it all: no host log (INFO loads) beside it
        return asyncio.run(_status(args, config))
    setup_logging(config.logging.level)
    settings, extras = host_settings(config), host_extras(config)
    reconfigure = host_reconfigure(config, args.config)
    return run_host(settings, make_host_intake(config), extras, reconfigure)


async def _status(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.composition import dns_client
    from mta_sts_policyd.service.host_parts import acme_names, host_cert_dirs, host_expectations

    documents, certificates = served(Path(config.host.policy_dir), host_cert_dirs(config))
    options = Options(
        policy_cert_warning_days=args.policy_cert_warning_days,
        policy_cert_critical_days=args.policy_cert_critical_days,
    )
    dns = dns_client(config, args.nameserver)
    seen = await observe_hosted(documents, certificates, dns, listed=acme_names(config))
    now = datetime.now(UTC)
    reports = judge_all(seen, host_expectations(config), options, now)
    if not reports:
        problem = folder_problem(documents.root)
        reason = f"no policies in {documents.root}"
        if problem is not None:
            reason += f": the folder {problem} (host.policy_dir)"
        return int(fail("host status", reason, NagiosStatus.UNKNOWN, as_json=args.json))
    status = worst_status(r.status for r in reports)
    if args.json:
        document = {
            "checked_at": now.isoformat().replace("+00:00", "Z"),
            "status": status.name,
            "exit_code": int(status),
            "domains": [r.to_json() for r in reports],
        }
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(as_text(reports))
    return int(status)


def as_text(reports: list[HostedReport]) -> str:
    blocks = []
    for r in reports:
        days = "none" if r.cert_days_left is None else f"{r.cert_days_left} days left"
        if r.cert_expired_at is not None:
            days = f"expired at {utc_text(r.cert_expired_at)}"
        lines = [
            f"{r.domain}: {r.status.name}",
            f"  mta-sts.{r.domain}: {', '.join(r.addresses) or 'no address'} ({r.delegation})",
            f"  _mta-sts.{r.domain} id: {r.txt_id or '-'}"
            f" (served {r.served_id or 'none'}: {r.id_verdict})",
            f"  certificate: {days}",
        ]
        for f in r.findings:
            lines.append(f"  {f.severity} {f.code}: {f.message}")
            if f.severity is not Severity.INFO:
                lines.append(f"      fix: {f.fix}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
