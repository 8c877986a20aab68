"""`mta-sts-policyd check DOMAIN...`: inspect one's own domains the way a compliant sender does.

Exit codes (Nagios plugin convention, see docs/check-findings.md): 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN (could not check, a name given that is not a domain, or no domain given). The valid
names are checked even when others are not domains; those are named at the end. A malformed
command line exits 64 like every other subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mta_sts_policyd.cli.arguments import (
    ca_file,
    days_left,
    nameserver,
    port_number,
    seconds,
    whole_number,
)
from mta_sts_policyd.cli.output import fail
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.service.own_domains import ReachSettings, open_reach
from mta_sts_policyd.tools.check.findings import NagiosStatus
from mta_sts_policyd.tools.check.names import sort_names
from mta_sts_policyd.tools.check.observations import Options
from mta_sts_policyd.tools.check.render import as_json, as_text, overall
from mta_sts_policyd.tools.check.runner import check_domains


def add_network_arguments(p: argparse.ArgumentParser, *, configured: str = "") -> None:
    """Options shared by `check` and `monitor`: how targets are reached and judged.

    `configured` names the configuration key that `--allow-private` overrides (`monitor`'s
    `[monitor] allow_private`): the option then also has a `--no-` form and is None when not
    given, so the file applies unless the command line says otherwise."""
    if configured:
        p.add_argument(
            "--allow-private",
            action=argparse.BooleanOptionalAction,
            help=f"contact private, loopback and link-local addresses too (default: {configured})",
        )
    else:
        p.add_argument(
            "--allow-private",
            action="store_true",
            help="contact private, loopback and link-local addresses too",
        )
    p.add_argument("--ca-file", type=ca_file, help="trust these CAs instead of the system store")
    p.add_argument(
        "--nameserver",
        action="append",
        type=nameserver,
        metavar="IP[:PORT]",
        help="DNS server to ask (repeatable; default: [discovery] nameservers)",
    )
    p.add_argument(
        "--https-port", type=port_number, help="policy host port (test set-ups; default 443)"
    )
    p.add_argument("--smtp-port", type=port_number, help="MX port (test set-ups; default 25)")
    p.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="per connection step (the policy fetch is capped at 60 s, RFC 8461)",
    )
    p.add_argument(
        "--concurrency", type=whole_number(1, 1000), default=10, help="domains checked at a time"
    )
    p.add_argument("--mx-cert-warning-days", type=days_left, default=21)
    p.add_argument("--mx-cert-critical-days", type=days_left, default=7)
    p.add_argument("--policy-cert-warning-days", type=days_left, default=21)
    p.add_argument("--policy-cert-critical-days", type=days_left, default=7)


def add_check_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check", parents=[common], help="check your own domains' MTA-STS set-up")
    p.add_argument("domains", nargs="*", metavar="DOMAIN")
    p.add_argument(
        "--from-file",
        type=Path,
        metavar="FILE",
        help="more domains, one per line (# starts a comment)",
    )
    p.add_argument("--json", action="store_true", help="the JSON document (schema_version 1)")
    p.add_argument(
        "--expect-cname",
        action="append",
        default=[],
        metavar="HOST",
        help="mta-sts or _mta-sts must be a CNAME to HOST (delegated hosting)",
    )
    p.add_argument("--expect-id", metavar="ID", help="the TXT id must be ID")
    add_network_arguments(p)
    p.set_defaults(handler=check_command)


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        allow_private=args.allow_private,
        mx_cert_warning_days=args.mx_cert_warning_days,
        mx_cert_critical_days=args.mx_cert_critical_days,
        policy_cert_warning_days=args.policy_cert_warning_days,
        policy_cert_critical_days=args.policy_cert_critical_days,
        expect_cname=tuple(getattr(args, "expect_cname", ()) or ()),
        expect_id=getattr(args, "expect_id", None),
    )


def read_domains(names: Sequence[str], from_file: Path | None) -> tuple[list[str], list[str]]:
    """(A-label domains, deduplicated in order; why each name that is not a domain is not,
    with its file and line when it came from `--from-file`): `sort_names`, `monitor`'s rule."""
    raw = [(name, "") for name in names]
    if from_file is not None:
        lines = from_file.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            raw += [
                (word, f"{from_file} line {number}: ") for word in line.split("#", 1)[0].split()
            ]
    domains, bad = sort_names([name for name, _ in raw], [where for _, where in raw])
    return list(domains), bad


def check_command(args: argparse.Namespace, config: Config) -> int:
    unknown = NagiosStatus.UNKNOWN
    try:
        domains, bad = read_domains(args.domains, args.from_file)
    except OSError as exc:
        reason = f"cannot read {args.from_file}: {exc.strerror or exc}"
        return fail("check", reason, unknown, as_json=args.json)
    except UnicodeDecodeError:
        reason = f"cannot read {args.from_file}: not UTF-8 text"
        return fail("check", reason, unknown, as_json=args.json)
    if not domains:  # nothing to check: say why, UNKNOWN
        return fail("check", "\n".join([*bad, "no domain given"]), unknown, as_json=args.json)
    return asyncio.run(_run(args, config, domains, bad))


async def _run(
    args: argparse.Namespace, config: Config, domains: list[str], bad: Sequence[str] = ()
) -> int:
    """Check `domains`; each name in `bad` (not a domain) is named after the reports, on
    stderr or in the JSON's `not_checked`, and makes the status at least UNKNOWN."""
    async with AsyncExitStack() as stack:
        reach = await open_reach(config, reach_settings(args), stack)
        tty = sys.stderr.isatty() and len(domains) > 1
        reports = await check_domains(
            domains,
            reach,
            options_from(args),
            now=lambda: datetime.now(UTC),
            concurrency=args.concurrency,
            progress=_progress if tty else None,
        )
    if tty:
        print(file=sys.stderr)
    if args.json:
        document = as_json(reports, datetime.now(UTC), not_checked=bad)
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(as_text(reports, colour=sys.stdout.isatty()))
        for why in bad:
            print(f"check: {why}: not checked", file=sys.stderr)
    return int(overall(reports, bad))


def _progress(done: int, total: int) -> None:
    print(f"\rchecked {done}/{total}", end="", file=sys.stderr, flush=True)


def reach_settings(args: argparse.Namespace) -> ReachSettings:
    return ReachSettings(
        nameservers=args.nameserver,
        ca_file=args.ca_file,
        https_port=args.https_port,
        smtp_port=args.smtp_port,
        timeout=args.timeout,
        concurrency=args.concurrency,
        allow_private=args.allow_private,
    )
