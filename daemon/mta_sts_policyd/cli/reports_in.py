"""`reports-in`: take in the TLS reports others send about your domains, summarise, judge.

    reports-in [--domain D]...              one message (or a saved report file) on stdin
    reports-in --maildir DIR [--domain D]...
    reports-in summary [--domain D] [--days N] [--json] [--html FILE]
    reports-in readiness DOMAIN [--policy FILE] [--json]

Exit codes of the intake follow what Postfix's pipe(8) and local(8) understand: 0 after
storing, and also after rejecting a message that is no usable report (logged, quarantined:
retrying would not help); 75 (EX_TEMPFAIL) when the store cannot be written, so Postfix keeps
the message and tries again (a damaged store too: the message, Postfix's deferral reason, says
to move the file aside). `readiness` exits 0 when `enforce` is safe, 1 when not; `summary`
0, or 1 when no report was received yet. A DOMAIN that is not a domain name, or not one of the
own domains with no report about it stored (its reports are never kept), or a `--policy` file
that cannot be read or is no policy, exits 64; an `--html` file that cannot be written 73. For
these two, which only read, a state directory or store that cannot be used (a file where the
directory should be, a damaged or unreadable store) is 73 naming the path, not a temporary 75:
waiting does not mend it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mta_sts_policyd.cli.arguments import domain_name, file_argument, whole_number
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.output import fail, print_json
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import PolicySyntaxError, StateUnusableError, StoreError
from mta_sts_policyd.reports_in.chart import render_page
from mta_sts_policyd.reports_in.maildir import scan_maildir
from mta_sts_policyd.reports_in.model import CountedDays
from mta_sts_policyd.reports_in.readiness import ServedPolicy, readiness, served_from_text
from mta_sts_policyd.reports_in.summary import Summary, by_count, not_counted_note, summarize
from mta_sts_policyd.service import composition
from mta_sts_policyd.sts.policy import parse_policy

EXIT_OK, EXIT_NOT_READY, EXIT_NOT_FOUND = ExitCode.OK, ExitCode.NOT_FOUND, ExitCode.NOT_FOUND
EXIT_USAGE, EXIT_TEMPFAIL = ExitCode.USAGE, ExitCode.TEMPFAIL


def register(
    sub: Any,
    common: argparse.ArgumentParser,
    reader: argparse.ArgumentParser,
    shared_after: list[argparse.ArgumentParser],
) -> None:
    """`reports-in` (the intake) with `summary` and `readiness` as its subcommands, so options
    may come before or after them (`readiness -c FILE DOMAIN`); `shared_after` are `common`
    and `reader` again, without defaults, so a value given before the subcommand stays."""
    p = sub.add_parser(
        "reports-in",
        parents=[common, reader],
        help="TLS reports received for your own domains (intake, summary, readiness)",
        description=__doc__.split("\n\n")[0],
    )
    domain_help = "own domain (repeatable)"
    p.add_argument("--domain", action="append", default=[], type=domain_name, help=domain_help)
    p.add_argument("--maildir", type=Path, help="take every new message of this Maildir")
    p.set_defaults(handler=run, action=None)
    actions = p.add_subparsers(dest="action", parser_class=type(p))
    s = actions.add_parser("summary", parents=shared_after, help="per-day summary")
    s.add_argument(
        "--domain", action="append", type=domain_name, default=argparse.SUPPRESS, help=domain_help
    )
    s.add_argument("--days", type=whole_number(1, 3660), default=30, help="days back (default 30)")
    s.add_argument("--html", type=Path, help="also write a self-contained HTML page")
    r = actions.add_parser("readiness", parents=shared_after, help="the enforce verdict")
    r.add_argument("target", metavar="DOMAIN", type=domain_name, help="one of your own domains")
    r.add_argument("--policy", type=Path, help="the policy file now served")


def run(args: argparse.Namespace, config: Config) -> int:
    command = {"summary": _summary, "readiness": _readiness}.get(args.action, _take)
    try:
        return command(args, config)
    except StoreError as exc:
        name = " ".join(filter(None, ("reports-in", args.action)))
        if args.action is not None and isinstance(exc, StateUnusableError):
            return fail(name, str(exc), ExitCode.CANT_CREATE, as_json=args.json)
        if isinstance(exc, StateUnusableError):  # the intake: waiting alone does not mend it
            reason = f"{exc}; until then reports are deferred (exit 75: Postfix keeps them)"
        else:
            reason = f"store unavailable, try again later: {exc}"  # the intake: Postfix retries
        return fail(name, reason, EXIT_TEMPFAIL, as_json=args.json)


def _take(args: argparse.Namespace, config: Config) -> int:
    """One report from stdin (the pipe transport) or every new one of `--maildir`."""
    try:
        intake = composition.make_reports_intake(config, args.domain)
        if args.maildir is not None:
            scanned = scan_maildir(args.maildir, intake)
            intake.prune()
            _say(args, {"taken": scanned.taken, "rejected": scanned.rejected})
            return EXIT_OK
        outcome = intake.take_message(sys.stdin.buffer.read(), "stdin")
        intake.prune()
    except FileNotFoundError as exc:
        return fail("reports-in", str(exc), EXIT_USAGE, as_json=args.json)
    _say(args, asdict(outcome))
    return EXIT_OK


def _summary(args: argparse.Namespace, config: Config) -> int:
    store = composition.read_reports_in_store(config)
    now = datetime.now(UTC)
    today = now.date()
    since = today - timedelta(days=max(args.days, 1))
    domains = sorted(composition.own_report_domains(config, args.domain))
    if store is None:
        summaries = [summarize(d, [], [], today) for d in domains]
    else:
        counted = {d: store.counted_days(d, since, now) for d in domains or store.domains()}
        summaries = [
            summarize(d, c.policies, c.failures, today, not_counted_future=c.not_counted_future)
            for d, c in counted.items()
        ]
    if args.html is not None:
        with file_argument("--html", args.html, writing=True):
            args.html.write_text(render_page(summaries, time.strftime("%Y-%m-%d %H:%M UTC")))
    if args.json:
        print_json([_summary_json(s) for s in summaries])
    elif not summaries:
        print("no reports received yet (and no own domains configured: reports_in.domains)")
    else:
        for s in summaries:
            _print_summary(s)
    return EXIT_OK if any(s.lines for s in summaries) else EXIT_NOT_FOUND


def _readiness(args: argparse.Namespace, config: Config) -> int:
    domain: str = args.target
    store = composition.read_reports_in_store(config)
    now = datetime.now(UTC)
    counted = CountedDays() if store is None else store.counted_days(domain, date.min, now)
    try:
        served = _served(args.policy, counted.policies)
    except PolicySyntaxError as exc:
        message = f"--policy {args.policy}: {exc}"
        return fail("reports-in readiness", message, EXIT_USAGE, as_json=args.json)
    if not (counted.policies or counted.not_counted_future) and domain not in (
        composition.own_report_domains(config)
    ):
        return fail("reports-in readiness", _not_own(domain), EXIT_USAGE, as_json=args.json)
    if served is None:
        message = f"no policy known for {domain}: pass --policy FILE"
        return fail("reports-in readiness", message, EXIT_NOT_READY, as_json=args.json)
    verdict = readiness(
        domain,
        served,
        counted.policies,
        counted.failures,
        min_days=config.reports_in.min_days,
        min_organizations=config.reports_in.min_organizations,
        not_counted_future=counted.not_counted_future,
    )
    if args.json:
        print_json(asdict(verdict))
    else:
        state = "READY for enforce" if verdict.ready else "NOT READY for enforce"
        print(f"{domain}: {state}")
        print(
            f"  {verdict.days_reported} day(s) of reports about the served policy from "
            f"{len(verdict.organizations)} organisation(s), {verdict.sessions} sessions, "
            f"{verdict.failures} failed"
        )
        if verdict.not_counted_future:
            print(f"  {not_counted_note(verdict.not_counted_future)}")
        for reason in verdict.reasons:
            print(f"  - {reason}")
    return EXIT_OK if verdict.ready else EXIT_NOT_READY


def _not_own(domain: str) -> str:
    """Why there is nothing to judge for a domain nobody named as one's own (a typo, or a domain
    not yet configured): the intake rejects its reports, so it could never be READY."""
    return (
        f"{domain} is not one of your own domains and no report about it is stored: name it in"
        " reports_in.domains (or an [[own_domains]] entry) in the configuration, or with"
        f" --domain {domain} on the intake, so that its reports are kept"
    )


def _served(path: Path | None, policies: list[Any]) -> ServedPolicy | None:
    """The policy file given, else the policy the latest report saw (said in the output)."""
    if path is not None:
        with file_argument("--policy", path):
            text = path.read_text(encoding="utf-8")
        parse_policy(text.encode("utf-8"))  # PolicySyntaxError: not a policy file
        return served_from_text(text.splitlines())
    latest = [p for p in policies if p.policy_type == "sts" and p.policy_text]
    if not latest:
        return None
    chosen = max(latest, key=lambda p: p.day)
    print(f"(no --policy: judging the policy reported last, {chosen.mode}/{chosen.policy_hash})")
    return served_from_text(chosen.policy_text.splitlines())


def _say(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(data, sort_keys=True))  # one line per message (pipe mode)
    else:
        print(", ".join(f"{k}: {v}" for k, v in data.items()))


def _summary_json(s: Summary) -> dict[str, Any]:
    return {
        "domain": s.domain,
        "days": [
            {
                "day": line.day.isoformat(),
                "organization": line.organization,
                "sessions": line.sessions,
                "failures": line.failures,
                "failure_rate": round(line.failure_rate, 4),
                "policies": sorted(line.policies),
                "failures_by_result_type": dict(line.by_result),
                "failures_by_mx": dict(line.by_mx),
            }
            for line in s.lines
        ],
        "stopped_reporting": [{"organization": o, "last_day": d.isoformat()} for o, d in s.stopped],
        "not_counted_future": s.not_counted_future,
    }


def _print_summary(s: Summary) -> None:
    print(f"{s.domain}:")
    if not s.lines:
        print("  no reports yet")
    for line in s.lines:
        results = by_count(line.by_result) or "-"
        print(
            f"  {line.day.isoformat()}  {line.organization}: {line.sessions} sessions, "
            f"{line.failures} failed ({line.failure_rate:.1%}); {results}; "
            f"policy {', '.join(sorted(line.policies))}"
        )
        if line.by_mx:
            print(f"{'':14}failures by MX: {by_count(line.by_mx)}")
    for org, day in s.stopped:
        print(f"  ! {org} stopped reporting (last report {day.isoformat()})")
    if s.not_counted_future:
        print(f"  {not_counted_note(s.not_counted_future)}")
