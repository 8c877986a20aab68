"""Intake of received reports end to end: the CLI as Postfix's pipe runs it, a Maildir, the
store's idempotence, quarantine, summary, readiness and the HTML page."""

from __future__ import annotations

import gc
import gzip
import io
import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.config.settings import CacheConfig, Config
from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.reports_in.model import FailureDay, PolicyDay, policy_hash
from mta_sts_policyd.reports_in.parse import parse_report
from mta_sts_policyd.reports_in.readiness import readiness, served_from_text
from mta_sts_policyd.reports_in.store import ReportsInStore
from mta_sts_policyd.service.composition import enforce_readiness
from mta_sts_policyd.state_files import REPORTS_IN_STORE_NAME
from mta_sts_policyd.tlsrpt.message import build_message
from mta_sts_policyd.tlsrpt.model import (
    DomainDay,
    FailureDetail,
    PolicyAggregate,
    PolicyRef,
    PolicyType,
)
from mta_sts_policyd.tlsrpt.report import ReportSettings, build_report
from support.received_reports import TESTING, as_mail, failure, report

TODAY = datetime.now(UTC).date()


def run(
    state: Path, *argv: str, stdin: bytes = b"", capsys: pytest.CaptureFixture[str] | None = None
) -> int:
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        return main(["reports-in", "--state-dir", str(state), *argv])
    finally:
        sys.stdin = old


def mail(org: str, day: date, **kw: object) -> bytes:
    return as_mail(report(org, day, **kw))  # type: ignore[arg-type]


def test_pipe_stores_a_report_and_the_same_report_twice_counts_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = mail(
        "Org A",
        TODAY - timedelta(days=1),
        ok=10,
        failed=2,
        details=[failure("certificate-expired", count=2)],
    )
    assert run(tmp_path, "--domain", "example.com", "--json", stdin=raw) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["stored"] == 1
    assert run(tmp_path, "--domain", "example.com", "--json", stdin=raw) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "stored": 0,
        "duplicates": 1,
        "rejected": [],
    }
    store = ReportsInStore(tmp_path / REPORTS_IN_STORE_NAME)
    (day,) = store.policy_days("example.com", date.min)
    assert (day.successes, day.failures, day.organization) == (10, 2, "Org A")
    (fail,) = store.failure_days("example.com", date.min)
    assert (fail.result_type, fail.count, fail.receiving_mx) == (
        "certificate-expired",
        2,
        "mx1.example.com",
    )


def test_not_a_report_and_other_domains_are_rejected_quarantined_and_exit_0(tmp_path: Path) -> None:
    assert run(tmp_path, "--domain", "example.com", stdin=b"Subject: hi\r\n\r\nhello\r\n") == 0
    other = as_mail(
        report(
            "Org",
            TODAY,
            policy={"policy-type": "no-policy-found", "policy-domain": "other.example"},
        )
    )
    assert run(tmp_path, "--domain", "example.com", stdin=other) == 0
    reasons = sorted(p.read_text() for p in (tmp_path / "reports-in-quarantine").glob("*.reason"))
    assert len(reasons) == 2
    assert any("no TLS report attached" in r for r in reasons)
    assert any("other.example, not an own domain" in r for r in reasons)
    assert ReportsInStore(tmp_path / REPORTS_IN_STORE_NAME).domains() == []


def test_a_saved_report_file_is_taken_as_json_or_gzip_and_anything_else_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator importing saved reports (`reports-in < report.json`): the bare JSON was
    refused as "no TLS report attached" while the same report gzipped was stored."""
    day = TODAY - timedelta(days=1)
    plain = json.dumps(report("Org A", day, report_id="plain"), indent=2).encode()
    packed = gzip.compress(json.dumps(report("Org B", day, report_id="packed")).encode())
    for raw in (plain, packed):
        assert run(tmp_path, "--domain", "example.com", "--json", stdin=raw) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["stored"] == 1
    orgs = {
        d.organization
        for d in ReportsInStore(tmp_path / REPORTS_IN_STORE_NAME).policy_days(
            "example.com", date.min
        )
    }
    assert orgs == {"Org A", "Org B"}
    assert run(tmp_path, "--domain", "example.com", stdin=b"%PDF-1.7\n%binary\n") == 0
    out = capsys.readouterr().out
    assert "input is neither a mail message, gzip nor a JSON report" in out
    assert "read 17 bytes, starting b'%PDF-1.7" in out
    assert "message -" not in out  # no Message-ID to name: it is no message


def test_a_store_that_cannot_be_written_asks_postfix_to_retry(tmp_path: Path) -> None:
    (tmp_path / REPORTS_IN_STORE_NAME).mkdir()  # a directory where the SQLite file should be
    assert run(tmp_path, "--domain", "example.com", stdin=mail("Org", TODAY)) == 75


def test_quarantine_is_bounded(tmp_path: Path) -> None:
    from mta_sts_policyd.reports_in.intake import Quarantine

    quarantine = Quarantine(tmp_path / "q", keep=3)
    for i in range(6):
        quarantine.put(f"message {i}".encode(), f"reason {i}", 1000.0 + i)
    assert len(list((tmp_path / "q").glob("*.bin"))) == 3
    assert len(list((tmp_path / "q").glob("*.reason"))) == 3


def test_maildir_messages_are_moved_never_deleted(tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "new" / "1.report").write_bytes(mail("Org A", TODAY))
    (box / "new" / "2.junk").write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    state = tmp_path / "state"
    assert run(state, "--domain", "example.com", "--maildir", str(box)) == 0
    assert [p.name for p in (box / "cur").iterdir()] == ["1.report:2,S"]
    assert [p.name for p in (box / ".Rejected" / "cur").iterdir()] == ["2.junk:2,S"]
    assert list((box / "new").iterdir()) == []


def test_summary_json_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    day = TODAY - timedelta(days=1)
    run(
        tmp_path,
        "--domain",
        "example.com",
        stdin=mail(
            "Org A", day, ok=90, failed=10, details=[failure("starttls-not-supported", count=10)]
        ),
    )
    run(tmp_path, "--domain", "example.com", stdin=mail("Org B", TODAY - timedelta(days=6)))
    capsys.readouterr()
    page = tmp_path / "page.html"
    assert run(tmp_path, "summary", "--domain", "example.com", "--json", "--html", str(page)) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    first = next(d for d in summary["days"] if d["organization"] == "Org A")
    assert first["failure_rate"] == 0.1 and first["failures_by_result_type"] == {
        "starttls-not-supported": 10
    }
    assert summary["stopped_reporting"][0]["organization"] == "Org B"
    html = page.read_text()
    assert "<svg" in html and "Org A" in html
    assert "<script" not in html and "src=" not in html and "href=" not in html


def test_summary_text_names_failures_by_receiving_mx_and_result_most_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json` had `failures_by_mx`; the text (and the HTML page) left out which MX failed."""
    day = TODAY - timedelta(days=1)
    details = [
        failure("certificate-expired", mx="mx1.example.com", count=2),
        failure("certificate-expired", mx="mx2.example.com", count=5),
        failure("starttls-not-supported", mx="mx1.example.com", count=1),
        failure("validation-failure", mx=None, count=3),  # type: ignore[arg-type]
        failure("validation-failure", mx="a.mx.example.com", count=3),
    ]
    raw = mail("Org A", day, ok=90, failed=14, details=details)
    assert run(tmp_path, "--domain", "example.com", stdin=raw) == 0
    run(tmp_path, "--domain", "example.com", stdin=mail("Org B", day))  # no failures
    capsys.readouterr()
    page = tmp_path / "page.html"
    assert run(tmp_path, "summary", "--domain", "example.com", "--html", str(page)) == 0
    lines = capsys.readouterr().out.splitlines()
    by_mx = "failures by MX: mx2.example.com 5, (unnamed) 3, a.mx.example.com 3, mx1.example.com 3"
    at = next(i for i, text in enumerate(lines) if "Org A:" in text)
    assert lines[at + 1] == " " * 14 + by_mx
    by_result = "certificate-expired 7, validation-failure 6, starttls-not-supported 1"
    assert f"failed (13.5%); {by_result}; policy" in lines[at]  # by result type, most first too
    assert "Org B:" in lines[at + 2]  # a day without failures gets no MX line
    assert sum("failures by MX" in text for text in lines) == 1
    assert by_mx.removeprefix("failures by MX: ") in page.read_text()
    assert by_result in page.read_text()


def test_summary_and_readiness_only_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Commands that read the received reports create nothing: run by root before any report
    came in, they must not leave root's files in the daemon's state directory."""
    state = tmp_path / "state"
    policy = tmp_path / "mta-sts.txt"
    policy.write_text("\r\n".join(TESTING) + "\r\n")
    own = tmp_path / "config.toml"
    own.write_text('[reports_in]\ndomains = ["example.com"]\n')
    assert run(state, "summary") == 1
    assert "no reports received yet" in capsys.readouterr().out
    assert run(state, "summary", "--domain", "example.com", "--json") == 1
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["domain"] == "example.com" and summary["days"] == []
    assert run(state, "readiness", "example.com", "--policy", str(policy), "-c", str(own)) == 1
    assert "NOT READY" in capsys.readouterr().out
    assert not state.exists()
    run(state, "--domain", "example.com", stdin=mail("Org A", TODAY))
    store = state / REPORTS_IN_STORE_NAME
    gc.collect()  # the intake's connection closes: its last write is in the file
    before = store.read_bytes()
    assert run(state, "summary", "--domain", "example.com") == 0
    assert "Org A" in capsys.readouterr().out
    assert store.read_bytes() == before


def damage(store: Path, how: str) -> None:
    """A store as operators find them: garbage, cut short, or bad past its first page (opens,
    fails at the first write)."""
    if how == "garbage":
        store.write_bytes(b"not a database" * 100)
        return
    run(store.parent, "--domain", "example.com", stdin=mail("Org A", TODAY, report_id="first"))
    gc.collect()  # the intake's connection closes: its pages are in the file
    data = store.read_bytes()
    page = 4096
    if how == "truncated":
        store.write_bytes(data[: page + 100])
    else:
        store.write_bytes(data[:page] + b"\xa5" * (len(data) - page))


def test_readiness_of_a_domain_not_ones_own_says_so_and_how_to_name_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A domain nobody configured (a typo, or not yet added) was answered "no policy known:
    pass --policy FILE" (exit 1), or NOT READY with --policy: its reports are rejected by the
    intake, so no --policy could ever make it READY. Usage error (64) naming the way to add it."""
    state = tmp_path / "state"
    policy = tmp_path / "mta-sts.txt"
    policy.write_text("\r\n".join(TESTING) + "\r\n")
    own = tmp_path / "config.toml"
    own.write_text('[reports_in]\ndomains = ["example.com"]\n')
    said = (
        "reports-in readiness: exmaple.com is not one of your own domains and no report about it"
        " is stored: name it in reports_in.domains (or an [[own_domains]] entry) in the"
        " configuration, or with --domain exmaple.com on the intake"
    )
    for extra in ([], ["--policy", str(policy)]):
        assert run(state, "readiness", "exmaple.com", "-c", str(own), *extra) == 64
        captured = capsys.readouterr()
        assert captured.err.startswith(said) and captured.out == ""
    assert run(state, "readiness", "exmaple.com", "-c", str(own), "--json") == 64
    error = json.loads(capsys.readouterr().out)
    assert error["exit_code"] == 64 and "not one of your own domains" in error["error"]
    assert run(state, "readiness", "example.com", "-c", str(own)) == 1  # own, no reports yet
    assert "no policy known for example.com: pass --policy FILE" in capsys.readouterr().err
    assert not state.exists()
    other = tmp_path / "other.toml"
    other.write_text('[reports_in]\ndomains = ["example.net"]\n')
    # Named with --domain on the intake only (as a pipe's argv may): its reports are judged.
    assert run(state, "--domain", "example.com", stdin=mail("Org A", TODAY)) == 0
    capsys.readouterr()
    assert run(state, "readiness", "example.com", "-c", str(other), "--policy", str(policy)) == 1
    captured = capsys.readouterr()
    assert "NOT READY for enforce" in captured.out and "not one of your own" not in captured.err


@pytest.mark.parametrize("how", ["garbage", "truncated", "inner-pages"])
def test_a_damaged_store_is_73_for_the_readers_and_75_for_the_intake_with_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """Waiting does not mend a damaged file. `summary` and `readiness` exit 73; the pipe intake
    keeps 75, so Postfix keeps the report, but said "store unavailable, try again later" for
    ever: every command now names the file, says it is no readable store and how to recover,
    in the same words."""
    store = tmp_path / REPORTS_IN_STORE_NAME
    damage(store, how)
    damaged = store.read_bytes()
    capsys.readouterr()
    way_out = (
        f"{store}: not a readable report store, the file is damaged (",
        "move it aside (with its -wal and -shm files, if any) and the next report received"
        " creates a new one",
    )
    assert run(tmp_path, "summary", "--json") == 73
    error = json.loads(capsys.readouterr().out)["error"]
    assert all(words in error for words in way_out) and "try again" not in error
    assert run(tmp_path, "readiness", "example.com") == 73
    err = capsys.readouterr().err
    assert err.startswith(f"reports-in readiness: {way_out[0]}") and way_out[1] in err
    assert run(tmp_path, "--domain", "example.com", stdin=mail("Org A", TODAY)) == 75
    err = capsys.readouterr().err
    assert err.startswith(f"reports-in: {way_out[0]}") and way_out[1] in err
    assert "try again later" not in err and "Postfix keeps them" in err
    assert store.read_bytes() == damaged
    for side in tmp_path.glob(f"{REPORTS_IN_STORE_NAME}-*"):
        side.unlink()  # what the message asks: move the file (and its -wal, -shm) aside
    store.rename(store.with_name(store.name + ".damaged"))
    assert run(tmp_path, "--domain", "example.com", "--json", stdin=mail("Org A", TODAY)) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["stored"] == 1


def test_a_state_dir_that_is_a_file_is_73_naming_it_not_no_reports_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`summary` printed "no reports yet" and `readiness` NOT READY (1), as if the directory
    were only empty; `report ...` says 73 for the same path since it tells them apart."""
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("")
    policy = tmp_path / "mta-sts.txt"
    policy.write_text("\r\n".join(TESTING) + "\r\n")
    assert run(not_a_dir, "summary", "--domain", "example.com") == 73
    captured = capsys.readouterr()
    assert "no reports" not in captured.out
    assert f"{not_a_dir}: cannot use the state directory: it is a file" in captured.err
    assert run(not_a_dir, "readiness", "example.com", "--policy", str(policy), "--json") == 73
    assert str(not_a_dir) in json.loads(capsys.readouterr().out)["error"]
    assert not_a_dir.read_text() == ""


def policy_days(days: int, orgs: tuple[str, ...], lines: list[str] = TESTING) -> list[PolicyDay]:
    digest = policy_hash(lines)
    return [
        PolicyDay(
            TODAY - timedelta(days=i), org, "sts", digest, "testing", "\n".join(lines), 100, 0
        )
        for i in range(days)
        for org in orgs
    ]


def test_readiness_clean_history_is_ready() -> None:
    verdict = readiness("example.com", served_from_text(TESTING), policy_days(14, ("A", "B")), [])
    assert verdict.ready and verdict.reasons == ()
    assert verdict.days_reported == 14 and verdict.organizations == ("A", "B")


def test_readiness_too_short_and_single_organisation() -> None:
    verdict = readiness("example.com", served_from_text(TESTING), policy_days(5, ("A",)), [])
    assert not verdict.ready
    assert verdict.reasons == (
        "5 day(s) of reports about the served policy, 14 needed",
        "reports from 1 organisation(s) (A), 2 needed",
    )


def test_readiness_failures_on_covered_mx_block_and_others_do_not() -> None:
    days = policy_days(14, ("A", "B"))
    digest = policy_hash(TESTING)
    failures = [
        FailureDay(
            TODAY - timedelta(days=d), "B", digest, "certificate-expired", "mx2.mx.example.com", 4
        )
        for d in (1, 2, 3)
    ] + [
        FailureDay(TODAY, "A", digest, "certificate-expired", "backup.elsewhere.example", 9),
        FailureDay(TODAY, "A", digest, "tlsa-invalid", "mx1.example.com", 9),
    ]
    verdict = readiness("example.com", served_from_text(TESTING), days, failures)
    assert not verdict.ready
    last = (TODAY - timedelta(days=1)).isoformat()
    assert verdict.reasons == (
        f"B saw certificate-expired on mx2.mx.example.com on 3 day(s) (last {last})",
    )


def test_readiness_counts_only_reports_about_the_served_policy() -> None:
    other = [*TESTING[:-1], "max_age: 604800"]
    verdict = readiness("example.com", served_from_text(other), policy_days(20, ("A", "B")), [])
    assert not verdict.ready and verdict.days_reported == 0


def test_readiness_cli_with_a_policy_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(14):
        for org in ("Org A", "Org B"):
            run(tmp_path, "--domain", "example.com", stdin=mail(org, TODAY - timedelta(days=i + 1)))
    policy = tmp_path / "mta-sts.txt"
    policy.write_text("\r\n".join(TESTING) + "\r\n")
    capsys.readouterr()
    assert run(tmp_path, "readiness", "example.com", "--policy", str(policy)) == 0
    assert "READY for enforce" in capsys.readouterr().out
    assert run(tmp_path, "readiness", "example.com", "--policy", str(policy), "--json") == 0
    assert json.loads(capsys.readouterr().out)["ready"] is True


def test_round_trip_our_own_sender_reports_are_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What this project sends (RFC 8460 report + mail), its own intake reads the same."""
    ref = PolicyRef(PolicyType.STS, "example.com", tuple(TESTING), ("mx1.example.com",))
    detail = FailureDetail(
        ResultType.CERTIFICATE_HOST_MISMATCH,
        "192.0.2.1",
        "mx1.example.com",
        receiving_ip="2001:db8::10",
    )
    day = TODAY - timedelta(days=1)
    doc = build_report(
        DomainDay(day, "example.com", None, (PolicyAggregate(ref, 40, 2, ((detail, 2),)),)),
        ReportSettings("Our Sender Org", "tlsrpt@sender.example"),
    )
    raw = build_message(
        doc,
        from_addr="tlsrpt@sender.example",
        to_addr="rua@example.com",
        date=datetime.now(UTC),
        message_id="<rt@sender.example>",
    )
    assert run(tmp_path, "--domain", "example.com", "--json", stdin=raw) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["stored"] == 1
    store = ReportsInStore(tmp_path / REPORTS_IN_STORE_NAME)
    (pd,) = store.policy_days("example.com", date.min)
    assert (pd.organization, pd.day, pd.successes, pd.failures, pd.mode) == (
        "Our Sender Org",
        day,
        40,
        2,
        "testing",
    )
    (fd,) = store.failure_days("example.com", date.min)
    assert (fd.result_type, fd.receiving_mx, fd.count) == (
        "certificate-host-mismatch",
        "mx1.example.com",
        2,
    )


def test_reports_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
    old = TODAY - timedelta(days=500)
    run(tmp_path, "--domain", "example.com", stdin=mail("Org", old, report_id="old"))
    assert (
        ReportsInStore(tmp_path / REPORTS_IN_STORE_NAME).policy_days("example.com", date.min) == []
    )
    run(tmp_path, "--domain", "example.com", stdin=mail("Org", TODAY, report_id="new"))
    (kept,) = ReportsInStore(tmp_path / REPORTS_IN_STORE_NAME).policy_days("example.com", date.min)
    assert kept.day == TODAY


def test_reports_dated_in_the_future_or_past_the_retention_are_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither may count: a day that has not happened would count towards `readiness`; a day
    past the retention would be stored and pruned at once, "stored" on every resend."""
    future = mail("Org", TODAY + timedelta(days=3), report_id="future")
    assert run(tmp_path, "--domain", "example.com", "--json", stdin=future) == 0
    (outcome,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()[-1:]]
    assert outcome["stored"] == 0 and "report future ends" in outcome["rejected"][0]
    assert "in the future" in outcome["rejected"][0]
    old = mail("Org", TODAY - timedelta(days=401), report_id="old")
    assert run(tmp_path, "--domain", "example.com", "--json", stdin=old) == 0
    (outcome,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()[-1:]]
    assert outcome["stored"] == 0
    assert outcome["rejected"] == [
        f"report old is about {TODAY - timedelta(days=401)}, older than"
        " reports_in.retention_days (400)"
    ]
    reasons = sorted(p.read_text() for p in (tmp_path / "reports-in-quarantine").glob("*.reason"))
    assert len(reasons) == 2
    edge = mail("Org", TODAY, report_id="today")  # ends at midnight tonight: counts
    assert run(tmp_path, "--domain", "example.com", "--json", stdin=edge) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["stored"] == 1


def store_as_before(state: Path, raw: dict[str, object]) -> None:
    """Store a report past the intake's date checks, as the intake did before it refused
    reports dated in the future."""
    store = ReportsInStore(state / REPORTS_IN_STORE_NAME)
    try:
        assert store.add(parse_report(json.dumps(raw).encode()), "stdin", 0.0)
    finally:
        store.close()


def test_stored_reports_dated_in_the_future_are_not_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """28 reports about days to come, stored before the intake refused them, made a domain
    READY; summary and readiness leave them out and say how many they left out."""
    for org in ("Org A", "Org B"):
        run(tmp_path, "--domain", "example.com", stdin=mail(org, TODAY - timedelta(days=1)))
        for i in range(14):
            store_as_before(tmp_path, report(org, TODAY + timedelta(days=30 + i)))
    policy = tmp_path / "mta-sts.txt"
    policy.write_text("\n".join(TESTING) + "\n")
    capsys.readouterr()
    assert run(tmp_path, "readiness", "example.com", "--policy", str(policy)) == 1
    out = capsys.readouterr().out
    assert "NOT READY for enforce" in out and "1 day(s) of reports" in out
    assert "28 stored report(s) dated in the future not counted" in out
    assert run(tmp_path, "readiness", "example.com", "--policy", str(policy), "--json") == 1
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["days_reported"], verdict["not_counted_future"]) == (1, 28)
    page = tmp_path / "page.html"
    assert run(tmp_path, "summary", "--domain", "example.com", "--json", "--html", str(page)) == 0
    assert "28 stored report(s) dated in the future not counted" in page.read_text()
    (summary,) = json.loads(capsys.readouterr().out)
    assert {d["day"] for d in summary["days"]} == {(TODAY - timedelta(days=1)).isoformat()}
    assert summary["not_counted_future"] == 28 and summary["stopped_reporting"] == []
    assert run(tmp_path, "summary", "--domain", "example.com") == 0
    assert "28 stored report(s) dated in the future not counted" in capsys.readouterr().out
    gate = enforce_readiness(
        Config(cache=CacheConfig(state_dir=str(tmp_path))), "example.com", TESTING
    )
    assert gate is not None and not gate.ready and gate.not_counted_future == 28


def test_a_report_counts_from_the_moment_its_range_starts(tmp_path: Path) -> None:
    raw = report("Org A", TODAY, details=[failure("certificate-expired")], failed=3)
    raw["date-range"] = {
        "start-datetime": "2030-01-01T12:00:00Z",
        "end-datetime": "2030-01-02T12:00:00Z",
    }
    store_as_before(tmp_path, raw)
    store = ReportsInStore(tmp_path / REPORTS_IN_STORE_NAME)
    start = datetime(2030, 1, 1, 12, tzinfo=UTC)
    for now, counted in ((start - timedelta(microseconds=1), 0), (start, 1)):
        assert len(store.policy_days("example.com", date.min, now=now)) == counted
        assert len(store.failure_days("example.com", date.min, now=now)) == counted
        assert store.reports_starting_after("example.com", now) == 1 - counted
    assert store.reports_starting_after("other.example", start - timedelta(days=1)) == 0
    store.close()
