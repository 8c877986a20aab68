"""`mta-sts-policyd monitor`: check one's own domains every interval; alert on transitions.

Domains come from `--domain` or the config's `[[own_domains]]`. `--once` runs one pass (for
cron or the systemd timer in systemd/) and exits with the Nagios code of the worst finding:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also: a name given that is not a domain, unless a
domain is CRITICAL, or no domain to monitor). As in `check`, a name that is not a domain does
not stop the others: they are monitored, it is named on stderr. Every option that has a
`[monitor]` key overrides it when given; otherwise the key applies.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from mta_sts_policyd.cli.arguments import seconds
from mta_sts_policyd.cli.check import add_network_arguments, options_from, reach_settings
from mta_sts_policyd.cli.output import fail
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import StoreError
from mta_sts_policyd.service.own_domains import (
    alert_settings,
    monitor_state,
    monitor_targets,
    open_reach,
)
from mta_sts_policyd.state_files import MONITOR_STATE_NAME
from mta_sts_policyd.tools.check.findings import NagiosStatus
from mta_sts_policyd.tools.check.render import finding_counts, overall
from mta_sts_policyd.tools.monitor.run import StateFile, Target, run_forever, run_once


def add_monitor_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "monitor", parents=[common], help="check your own domains on a schedule; alert on changes"
    )
    p.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="domain to monitor (repeatable; default: [[own_domains]] in the config)",
    )
    p.add_argument("--once", action="store_true", help="one pass; exit with the Nagios code")
    p.add_argument("--state-file", type=Path, help=f"default: STATE_DIR/{MONITOR_STATE_NAME}")
    p.add_argument(
        "--interval",
        type=seconds,
        metavar="SECONDS",
        help="seconds between passes (default: [monitor] interval)",
    )
    p.add_argument(
        "--alert-command",
        type=_command_line,
        metavar="COMMAND",
        help="run this program with the transitions as JSON on stdin; split into words like a"
        " POSIX shell does (quote a path with spaces) but run without a shell"
        " (default: [monitor] alert_command)",
    )
    p.add_argument(
        "--alert-mail-to",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="mail the transitions here (repeatable; default: [monitor] alert_mail_to)",
    )
    add_network_arguments(p, configured="[monitor] allow_private")
    p.set_defaults(handler=monitor_command)


def _command_line(text: str) -> tuple[str, ...]:
    """argparse type: `--alert-command` as the program and its arguments, the form of
    `[monitor] alert_command`; shell quoting, not a split on every space, so a program path
    with a space can be given."""
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:  # an unclosed quote
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not words:
        raise argparse.ArgumentTypeError("an empty command")
    return words


def monitor_command(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.logsetup import setup_logging

    setup_logging(config.logging.level)
    if args.allow_private is None:  # not on the command line: the configuration's
        args.allow_private = config.monitor.allow_private
    targets, not_domains = monitor_targets(config, args.domain, options_from(args))
    if not targets:  # nothing to monitor: say why, UNKNOWN
        no_domain = "no domain (give --domain or [[own_domains]] in the config)"
        return fail("monitor", "\n".join([*not_domains, no_domain]), NagiosStatus.UNKNOWN)
    state = monitor_state(config, args.state_file)
    try:
        return asyncio.run(_run(args, config, targets, state, not_domains))
    except StoreError as exc:  # the state file's path cannot be read or written
        print(f"monitor: {exc}", file=sys.stderr)
        return NagiosStatus.UNKNOWN


def _not_monitored(not_domains: Sequence[str]) -> None:
    for why in not_domains:
        print(f"monitor: {why}: not monitored", file=sys.stderr)


async def _run(
    args: argparse.Namespace,
    config: Config,
    targets: list[Target],
    state: StateFile,
    not_domains: Sequence[str] = (),
) -> int:
    """Monitor `targets`; each name in `not_domains` (not a domain) is named on stderr, after
    the pass with `--once` (where it makes the exit at least UNKNOWN, as in `check`), else
    before the loop starts. It has no state, so it is never alerted."""
    alerts = alert_settings(config, args.alert_mail_to, args.alert_command or ())
    async with AsyncExitStack() as stack:
        reach = await open_reach(config, reach_settings(args), stack)
        if args.once:
            result = await run_once(
                targets,
                reach,
                state,
                alerts,
                concurrency=args.concurrency,
                forget_others=not args.domain,
            )
            for t in result.transitions:
                print(t.line())
            for report in result.reports:
                print(f"{report.domain}: {report.status.name} ({finding_counts(report)})")
            _not_monitored(not_domains)
            return int(overall(result.reports, not_domains))
        _not_monitored(not_domains)
        interval = args.interval or config.monitor.interval
        await run_forever(
            targets,
            reach,
            state,
            alerts,
            interval=interval,
            jitter=min(config.monitor.jitter, interval / 2),
            forget_others=not args.domain,
        )
    return 0
