"""`report list|show|send|status` handlers through argparse (exit codes 0/1/75)."""

from __future__ import annotations

import argparse
import email
import gzip
import io
import json
from pathlib import Path

import pytest

from mta_sts_policyd.cli.arguments import FileArgumentError
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.report import register
from mta_sts_policyd.tlsrpt.context import ReportContext
from mta_sts_policyd.tlsrpt.deliver import DeliverySettings
from mta_sts_policyd.tlsrpt.message import DkimSettings
from mta_sts_policyd.tlsrpt.report import ReportSettings
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support.tlsrpt_validate import fixed_events, validate_report


def _run(ctx: ReportContext, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    code = args.handler(args, ReportContext(**{**ctx.__dict__, "out": out}))
    return code, out.getvalue()


def _ctx(tmp_path: Path, smtp_port: int = 1) -> ReportContext:
    return ReportContext(
        store_path=tmp_path / "s.db",
        report=ReportSettings("Org", "tlsrpt@sender.example"),
        delivery=DeliverySettings(
            envelope_sender="b@sender.example",
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_timeout=2,
        ),
        dkim=DkimSettings(allow_unsigned=True),
    )


def _fill(tmp_path: Path) -> None:
    with TlsRptStore(tmp_path / "s.db") as store:
        for e in fixed_events():
            store.submit(e)


def test_missing_store_and_empty_day_exit_1(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert _run(ctx, "report", "list")[0] == 1
    _fill(tmp_path)
    assert _run(ctx, "report", "show", "--day", "2020-01-01")[0] == 1


@pytest.mark.parametrize(
    "argv",
    [["list"], ["list", "--day", "2020-01-01"], ["show", "--day", "2020-01-01"],
     ["status"], ["status", "--day", "2020-01-01"]],
)  # fmt: skip
def test_no_data_with_json_is_an_empty_list_and_exit_1(tmp_path: Path, argv: list[str]) -> None:
    """README "Exit codes": `--json` changes the output, never the code; "no data yet" is 1 in
    both forms (and `[]` is one JSON document, nothing else on stdout)."""
    ctx = _ctx(tmp_path)
    assert _run(ctx, "report", *argv, "--json") == (ExitCode.NOT_FOUND, "[]\n")  # no store yet
    assert _run(ctx, "report", *argv)[0] == ExitCode.NOT_FOUND
    _fill(tmp_path)
    if "--day" in argv:  # a store with other days only
        assert _run(ctx, "report", *argv, "--json") == (ExitCode.NOT_FOUND, "[]\n")
        assert _run(ctx, "report", *argv)[0] == ExitCode.NOT_FOUND


def test_list_show_json(tmp_path: Path) -> None:
    _fill(tmp_path)
    ctx = _ctx(tmp_path)
    code, out = _run(ctx, "report", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 4
    assert {
        "day": "2026-11-21",
        "domain": "other.example",
        "tlsrpt-record": "v=TLSRPTv1; rua=mailto:tls@other.example",
        "policies": 1,
        "successful": 1,
        "failed": 0,
    } in rows
    code, out = _run(
        ctx, "report", "show", "--day", "2026-11-21", "--domain", "hand.example", "--json"
    )
    (report,) = json.loads(out)
    validate_report(report)
    assert code == 0 and report["policies"][0]["policy"]["policy-type"] == "tlsa"


def test_no_data_names_the_domain_and_day_asked_for(tmp_path: Path) -> None:
    """The day has data, the domain has none: "no data yet for 2026-11-21" read as if the
    whole day were empty."""
    _fill(tmp_path)
    code, out = _run(
        _ctx(tmp_path), "report", "show", "--day", "2026-11-21", "--domain", "nope.example"
    )
    assert (code, out) == (1, "no data yet for nope.example on 2026-11-21\n")


@pytest.mark.parametrize(
    ("fleet", "says"),
    [(False, "the daemon schedules a day's reports after it ends (UTC); `report list` shows the"
              " counts, `report send --day DAY` sends an ended day now"),
     (True, "in fleet mode the fleet sends each report (`fleet status`); `report list` shows"
             " this node's counts")],
)  # fmt: skip
def test_status_of_counts_without_a_delivery_job_says_why(
    tmp_path: Path, fleet: bool, says: str
) -> None:
    """`report status` said "no data yet" while `report list` showed the day's counts."""
    _fill(tmp_path)
    ctx = ReportContext(**{**_ctx(tmp_path).__dict__, "fleet": fleet})
    code, out = _run(ctx, "report", "status", "--day", "2026-11-21")
    assert code == 1 and out.startswith("no report to deliver yet on 2026-11-21: ")
    assert out.rstrip("\n").endswith(says)
    assert _run(ctx, "report", "status", "--day", "2020-01-01")[1] == "no data yet on 2020-01-01\n"


def test_send_outbox_writes_exact_files(tmp_path: Path) -> None:
    _fill(tmp_path)
    outbox = tmp_path / "out"
    code, _ = _run(
        _ctx(tmp_path),
        "report",
        "send",
        "--day",
        "2026-11-21",
        "--domain",
        "company-y.example",
        "--outbox",
        str(outbox),
    )
    assert code == 0
    (gz,) = outbox.glob("*.json.gz")
    (eml,) = outbox.glob("*.eml")
    validate_report(json.loads(gzip.decompress(gz.read_bytes())))
    msg = email.message_from_bytes(eml.read_bytes())
    assert msg["To"] == "tlsrpt@company-y.example"
    assert msg.get_payload()[1].get_filename() == gz.name


def test_an_outbox_that_cannot_be_made_names_itself(tmp_path: Path) -> None:
    """Exit 73 through the command line's one error path, not 75 (temporary)."""
    _fill(tmp_path)
    (tmp_path / "a-file").write_text("not a folder\n")
    outbox = tmp_path / "a-file" / "out"
    with pytest.raises(FileArgumentError) as info:
        _run(_ctx(tmp_path), "report", "send", "--day", "2026-11-21", "--outbox", str(outbox))
    assert info.value.exit_code == ExitCode.CANT_CREATE
    assert str(info.value).startswith(f"--outbox {outbox}: cannot write: ")


def test_send_temporary_failure_is_75_and_status_shows_it(tmp_path: Path) -> None:
    _fill(tmp_path)
    ctx = _ctx(tmp_path)  # relay port 1: connection refused → retry later
    code, out = _run(ctx, "report", "send", "--day", "2026-11-21", "--domain", "hand.example")
    assert code == 75 and "scheduled" in out
    code, out = _run(ctx, "report", "status", "--json")
    (job,) = json.loads(out)
    assert code == 0 and job["domain"] == "hand.example" and job["attempts"] == 1
    assert job["destinations"][0]["state"] == "pending"
