"""`report list|show|send|status`: the operator's view of TLS-RPT data and delivery.

Each handler is `(args, ctx) -> exit code` (cli/exit_codes.py): 0 ok, 1 nothing found ("no
data yet"; with `--json` too, after printing `[]`: the format never changes the code, README
"Exit codes"), 64 for a day that has not ended, 75 when a send failed temporarily. cli/main.py calls
`register(subparsers)` and dispatches `args.handler(args, ctx)` (after saying "TLS reporting is
off" when it is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, TextIO

from mta_sts_policyd.cli.arguments import file_argument
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.output import print_json
from mta_sts_policyd.errors import DnsLookupError, MtaStsError
from mta_sts_policyd.state_files import refuse_non_directory
from mta_sts_policyd.tlsrpt.context import ReportContext
from mta_sts_policyd.tlsrpt.deliver import NetworkTransport
from mta_sts_policyd.tlsrpt.record import (
    RecordSyntaxError,
    TlsRptRecord,
    TxtQuery,
    fetch_tlsrpt_record,
    parse_tlsrpt_record,
)
from mta_sts_policyd.tlsrpt.report import ReportDocument, build_report
from mta_sts_policyd.tlsrpt.sender import day_ended
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from mta_sts_policyd.tlsrpt.store.ledger import Job, JobBook, JobState

EX_OK, EX_NOTFOUND, EX_TEMPFAIL = ExitCode.OK, ExitCode.NOT_FOUND, ExitCode.TEMPFAIL
EX_USAGE = ExitCode.USAGE
NO_DATA = "no data yet"
_NO_JOB = "no report to deliver yet"
"""`report status` of counts that have no delivery job (the day has not ended, or a fleet)."""


Handler = Callable[[argparse.Namespace, ReportContext], int]


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def register(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add `report` with its four subcommands; each sets `handler` on the namespace."""
    report = subparsers.add_parser("report", parents=list(parents), help="TLS-RPT reports")
    sub = report.add_subparsers(dest="report_command", required=True, metavar="COMMAND")
    specs: list[tuple[str, str, Handler]] = [
        ("list", "days and domains with collected data", cmd_list),
        ("show", "the report JSON for a day", cmd_show),
        ("send", "build and send (or write) the reports of a day now", cmd_send),
        ("status", "delivery state of reports", cmd_status),
    ]
    for name, help_text, handler in specs:
        p = sub.add_parser(name, parents=list(parents), help=help_text)
        p.set_defaults(handler=handler)
        day_required = name in ("show", "send")
        p.add_argument("--day", type=_day, required=day_required, help="UTC day, YYYY-MM-DD")
        if name != "list":
            p.add_argument("--domain", help="only this report domain")
        if name == "send":
            p.add_argument("--outbox", type=Path, help="write .eml/.json.gz here, send nothing")
        else:
            p.add_argument("--json", action="store_true", help="machine-readable output")


def _out(ctx: ReportContext) -> TextIO:
    return ctx.out or sys.stdout


def _no_data(
    args: argparse.Namespace,
    ctx: ReportContext,
    *,
    listed: bool = False,
    what: str = NO_DATA,
    why: str = "",
) -> ExitCode:
    """Nothing collected (yet) for the request: say so, naming the domain and day asked for
    (and `why`, when more is known), exit 1; `--json` gets an empty list."""
    if getattr(args, "json", False):
        if not listed:
            print_json([], _out(ctx))
    else:
        domain, day = getattr(args, "domain", None), getattr(args, "day", None)
        asked = f"{f' for {domain}' if domain else ''}{f' on {day}' if day else ''}"
        _out(ctx).write(f"{what}{asked}{why}\n")
    return EX_NOTFOUND


def _open(ctx: ReportContext) -> TlsRptStore | None:
    refuse_non_directory(ctx.store_path.parent, "use the state directory")
    if not ctx.store_path.exists():
        return None
    return ctx.open_store()


def cmd_list(args: argparse.Namespace, ctx: ReportContext) -> int:
    store = _open(ctx)
    if store is None:
        return _no_data(args, ctx)
    with store:
        rows = store.counts(args.day)
    out = _out(ctx)
    if args.json:
        print_json(
            [
                {
                    "day": r.day.isoformat(),
                    "domain": r.report_domain,
                    "tlsrpt-record": r.tlsrpt_record,
                    "policies": r.policies,
                    "successful": r.successes,
                    "failed": r.failures,
                }
                for r in rows
            ],
            out,
        )
    for r in [] if args.json else rows:
        out.write(
            f"{r.day} {r.report_domain} ok={r.successes} failed={r.failures} "
            f"policies={r.policies} record={r.tlsrpt_record or '-'}\n"
        )
    return EX_OK if rows else _no_data(args, ctx, listed=True)


def _documents(
    store: TlsRptStore, ctx: ReportContext, day: date, domain: str | None
) -> list[ReportDocument]:
    return [build_report(dd, ctx.report) for dd in store.domain_days(day, domain)]


def cmd_show(args: argparse.Namespace, ctx: ReportContext) -> int:
    store = _open(ctx)
    if store is None:
        return _no_data(args, ctx)
    with store:
        docs = _documents(store, ctx, args.day, args.domain)
    out = _out(ctx)
    reports = [json.loads(d.json_bytes) for d in docs]
    if args.json:
        print_json(reports, out)
    else:
        for doc, rep in zip(docs, reports, strict=True):
            out.write(f"# {doc.filename}\n{json.dumps(rep, indent=2, ensure_ascii=False)}\n")
    return EX_OK if docs else _no_data(args, ctx, listed=True)


def cmd_status(args: argparse.Namespace, ctx: ReportContext) -> int:
    store = _open(ctx)
    if store is None:
        return _no_data(args, ctx)
    with store:
        book = JobBook(store)
        jobs = [
            j for j in book.jobs(args.day) if args.domain is None or j.report_domain == args.domain
        ]
        rows = [(j, book.destinations(j)) for j in jobs]
        counted = bool(rows) or any(
            args.domain in (None, c.report_domain) for c in store.counts(args.day)
        )
    out = _out(ctx)
    if args.json:
        print_json(
            [
                {
                    "day": j.day.isoformat(),
                    "domain": j.report_domain,
                    "state": j.state,
                    "due": j.due,
                    "attempts": j.attempts,
                    "report-id": j.report_id,
                    "last-error": j.last_error,
                    "destinations": [
                        {
                            "destination": d.destination,
                            "state": d.state,
                            "attempts": d.attempts,
                            "last-error": d.last_error,
                        }
                        for d in dests
                    ],
                }
                for j, dests in rows
            ],
            out,
        )
    for j, dests in [] if args.json else rows:
        out.write(
            f"{j.day} {j.report_domain} {j.state} attempts={j.attempts} "
            f"error={j.last_error or '-'}\n"
        )
        for d in dests:
            out.write(f"    {d.destination} {d.state} attempts={d.attempts}\n")
    if rows:
        return EX_OK
    if not counted:
        return _no_data(args, ctx, listed=True)
    if ctx.fleet:
        why = ": in fleet mode the fleet sends each report (`fleet status`); `report list`"
        return _no_data(args, ctx, listed=True, what=_NO_JOB, why=f"{why} shows this node's counts")
    why = ": the daemon schedules a day's reports after it ends (UTC); `report list` shows the"
    why += " counts, `report send --day DAY` sends an ended day now"
    return _no_data(args, ctx, listed=True, what=_NO_JOB, why=why)


def cmd_send(args: argparse.Namespace, ctx: ReportContext) -> int:
    if not day_ended(args.day, ctx.clock()):
        print(
            f"report send: {args.day.isoformat()} has not ended yet (UTC): its report would be "
            "incomplete and dated before the end of its period, and the daemon would not send "
            "the whole day after midnight; `report show --day` shows the data so far",
            file=sys.stderr,
        )
        return EX_USAGE
    if ctx.fleet and args.outbox is None:
        print(
            "report send: fleet mode is on: the fleet sends each report once with every node's "
            "counts (docs/fleet.md); this node's counts alone would be a second, partial "
            "report. `report send --outbox DIR` writes it without sending",
            file=sys.stderr,
        )
        return EX_USAGE
    store = _open(ctx)
    if store is None:
        return _no_data(args, ctx)
    with store:
        try:
            if args.outbox is not None:
                return _write_outbox(store, ctx, args)
            return asyncio.run(_send_now(store, ctx, args))
        except MtaStsError as exc:
            _out(ctx).write(f"error: {exc}\n")
            return EX_TEMPFAIL


async def _send_now(store: TlsRptStore, ctx: ReportContext, args: argparse.Namespace) -> int:
    """Send immediately through the same job state the daemon uses (no duplicates)."""
    sender = ctx.sender(store)
    book = JobBook(store)
    now = sender.clock()
    docs = store.domain_days(args.day, args.domain)
    if not docs:
        return _no_data(args, ctx)
    worst = EX_OK
    for dd in docs:
        book.create(Job(dd.day, dd.report_domain, dd.tlsrpt_record, JobState.SCHEDULED, now), now)
        job = book.get(dd.day, dd.report_domain, dd.tlsrpt_record)
        assert job is not None
        state = job.state if job.state != JobState.SCHEDULED else await sender.attempt(job)
        _out(ctx).write(f"{dd.day} {dd.report_domain}: {state}\n")
        if state == JobState.SCHEDULED:
            worst = EX_TEMPFAIL
    return worst


def _write_outbox(store: TlsRptStore, ctx: ReportContext, args: argparse.Namespace) -> int:
    """The exact .json.gz and, per mailto destination, the exact (signed if possible) .eml."""
    outbox: Path = args.outbox
    dkim = ctx.dkim if ctx.dkim.configured else replace(ctx.dkim, allow_unsigned=True)
    transport = NetworkTransport(ctx.delivery, dkim)
    docs = _documents(store, ctx, args.day, args.domain)
    for doc in docs:
        record = asyncio.run(_record(doc, ctx.txt_lookup))
        mailtos = [d for d in (record.destinations if record else ()) if d.kind == "mailto"]
        with file_argument("--outbox", outbox, writing=True):
            outbox.mkdir(parents=True, exist_ok=True)
            (outbox / doc.filename).write_bytes(doc.gzip_bytes())
            for n, dest in enumerate(mailtos, 1):
                eml = outbox / f"{doc.filename.removesuffix('.json.gz')}.{n}.eml"
                eml.write_bytes(transport.render_mail(doc, dest.target))
        _out(ctx).write(
            f"{doc.report_domain}: {doc.filename} "
            f"({len(mailtos)} message(s), record={doc.tlsrpt_record or '-'})\n"
        )
    return EX_OK if docs else _no_data(args, ctx, listed=True)


async def _record(doc: ReportDocument, lookup: TxtQuery | None) -> TlsRptRecord | None:
    if doc.tlsrpt_record is not None:
        try:
            return parse_tlsrpt_record(doc.tlsrpt_record)
        except RecordSyntaxError:
            return None
    if lookup is None:
        return None
    try:
        return await fetch_tlsrpt_record(doc.report_domain, lookup)
    except DnsLookupError:
        return None
