"""Following the mail log: rotation (rename, copytruncate), resume without double counting,
partial lines, and the journal through a stand-in `journalctl` (no journald on the test host)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mta_sts_policyd.tlsrpt.maillog.file_follower import FileFollower, LogFile
from mta_sts_policyd.tlsrpt.maillog.journal_follower import JournalFollower, journal_record
from mta_sts_policyd.tlsrpt.maillog.sessions import MaillogSessions
from mta_sts_policyd.tlsrpt.model import PolicyRef, PolicyType, SessionEvent
from support import TESTS_DIR

FIXTURES = TESTS_DIR / "fixtures" / "maillog"


def lines(n: int, start: int = 0) -> str:
    return "".join(f"line {i}\n" for i in range(start, start + n))


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def names(got: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in got]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "mail.log"
    path.write_text(lines(3))
    return path


def reader(log: Path, *, at_end: bool = False) -> LogFile:
    return LogFile(log, log.parent / "maillog.pos", start_at_end=at_end)


def test_first_start_skips_history_when_asked(log: Path) -> None:
    lf = reader(log, at_end=True)
    assert lf.read_lines() == []
    append(log, lines(2, 3))
    assert names(lf.read_lines()) == [3, 4]
    assert lf.read_lines() == []


def test_partial_last_line_waits_for_its_newline(log: Path) -> None:
    lf = reader(log)
    append(log, "line 3 begins")
    assert names(lf.read_lines()) == [0, 1, 2]
    append(log, " and ends\n")
    assert lf.read_lines() == ["line 3 begins and ends"]


def test_rotation_by_rename_reads_the_old_file_to_its_end(log: Path) -> None:
    lf = reader(log)
    assert names(lf.read_lines()) == [0, 1, 2]
    log.rename(log.with_name("mail.log.1"))
    append(log.with_name("mail.log.1"), lines(2, 3))  # the writer has not reopened yet
    assert names(lf.read_lines()) == [3, 4]  # no new file yet: keep reading the old one
    append(log.with_name("mail.log.1"), lines(1, 5))
    log.write_text(lines(2, 6))  # the writer reopened: new file
    assert names(lf.read_lines()) == [5, 6, 7]
    assert lf.rotations == 1


def test_copytruncate_restarts_at_the_beginning(log: Path) -> None:
    lf = reader(log)
    assert names(lf.read_lines()) == [0, 1, 2]
    shutil.copy(log, log.with_name("mail.log.1"))
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, lines(1, 3))
    assert names(lf.read_lines()) == [3]
    assert lf.rotations == 1


def test_copytruncate_noticed_even_when_the_file_grew_past_the_old_offset(log: Path) -> None:
    lf = reader(log)
    lf.read_lines()
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, "a much longer first line after the truncation\n" + lines(3, 3))
    assert lf.read_lines() == [
        "a much longer first line after the truncation",
        *lines(3, 3).split("\n")[:-1],
    ]


def test_restart_resumes_without_double_counting(log: Path) -> None:
    lf = reader(log)
    assert names(lf.read_lines()) == [0, 1, 2]
    lf.commit()
    lf.close()
    append(log, lines(2, 3))
    again = reader(log)
    assert names(again.read_lines()) == [3, 4]


def test_restart_after_rotation_finishes_the_rotated_file_first(log: Path) -> None:
    lf = reader(log)
    lf.read_lines()
    lf.commit()
    lf.close()
    append(log, lines(2, 3))
    log.rename(log.with_name("mail.log.1"))
    log.write_text(lines(1, 5))
    assert names(reader(log).read_lines()) == [3, 4, 5]


def test_restart_after_copytruncate_while_down_starts_over(log: Path) -> None:
    lf = reader(log)
    lf.read_lines()
    lf.commit()
    lf.close()
    log.write_text("other first line\n")  # same inode, other content (truncated and rewritten)
    assert reader(log).read_lines() == ["other first line"]


def test_corrupt_state_file_is_treated_as_no_state(log: Path) -> None:
    (log.parent / "maillog.pos").write_text("{not json")
    assert reader(log, at_end=True).read_lines() == []


def test_missing_file_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    lf = reader(path)
    assert lf.read_lines() == []
    path.write_text(lines(1))
    assert names(lf.read_lines()) == [0]


# --- the asyncio follower with real captured lines -------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def submit(self, event: SessionEvent) -> None:
        self.events.append(event)


def no_policy(domain: str, when: float) -> None:
    return None


async def test_file_follower_emits_sessions_and_resumes_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    path.write_text("")
    sink = Sink()
    sessions = MaillogSessions(no_policy, sink)
    follower = FileFollower(LogFile(path, tmp_path / "pos"), sessions, interval=0.01)
    await follower.start()
    append(path, (FIXTURES / "may-trusted.log").read_text())
    for _ in range(200):
        if sink.events:
            break
        await asyncio.sleep(0.01)
    await follower.stop()
    assert [e.report_domain for e in sink.events] == ["may-trusted.example.test"]
    assert sessions.counters.sessions == 1
    assert sessions.counters.lines == len((FIXTURES / "may-trusted.log").read_text().splitlines())

    append(path, (FIXTURES / "may-untrusted.log").read_text())
    second = FileFollower(LogFile(path, tmp_path / "pos"), sessions, interval=0.01)
    await second.start()
    await second.stop()
    assert [e.report_domain for e in sink.events] == [
        "may-trusted.example.test",
        "may-untrusted.example.test",
    ]


# --- journal ----------------------------------------------------------------------------------


def _entry(cursor: str, message: str, pid: str = "99") -> dict[str, str]:
    return {
        "__CURSOR": cursor,
        "__REALTIME_TIMESTAMP": "1795435200000000",
        "_HOSTNAME": "relay",
        "SYSLOG_IDENTIFIER": "postfix/smtp",
        "_PID": pid,
        "MESSAGE": message,
    }


def _journal_entries() -> list[dict[str, str]]:
    msgs = [ln.split(": ", 1)[1] for ln in (FIXTURES / "may-trusted.log").read_text().splitlines()]
    second = (FIXTURES / "may-untrusted.log").read_text().splitlines()
    msgs += [ln.split(": ", 1)[1] for ln in second]
    return [_entry(f"c{i}", m) for i, m in enumerate(msgs)]


def write_entries(path: Path, entries: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


@pytest.fixture
def fake_journalctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `journalctl` on PATH that prints entries after --after-cursor, then waits like -f."""
    data = tmp_path / "journal.jsonl"
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "bin" / "journalctl"
    script.parent.mkdir()
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, sys, time
            args = sys.argv[1:]
            with open({str(calls)!r}, "a") as fh:
                fh.write(json.dumps(args) + "\\n")
            after = args[args.index("--after-cursor") + 1] if "--after-cursor" in args else None
            entries = [json.loads(x) for x in open({str(data)!r})]
            if after is not None:
                entries = entries[[e["__CURSOR"] for e in entries].index(after) + 1:]
            elif "--lines" in args:
                entries = []
            for e in entries:
                print(json.dumps(e), flush=True)
            print("not json", flush=True)
            time.sleep(60)
            """
        )
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return data


async def _until(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_journal_follower_resumes_from_saved_cursor(
    fake_journalctl: Path, tmp_path: Path
) -> None:
    entries = _journal_entries()
    half = len((FIXTURES / "may-trusted.log").read_text().splitlines())
    write_entries(fake_journalctl, entries[:half])
    sink = Sink()
    sessions = MaillogSessions(no_policy, sink)
    cursor = tmp_path / "journal.cursor"

    fresh = JournalFollower(sessions, cursor, units=["postfix@-.service"])
    assert fresh.command()[-2:] == ["--lines", "0"]  # no cursor yet: only new records
    # a previous run saw the first record only
    cursor.write_text(json.dumps({"cursor": entries[0]["__CURSOR"]}))
    first = JournalFollower(sessions, cursor, units=["postfix@-.service"])
    await first.start()
    await _until(lambda: sessions.counters.lines >= half)
    await first.stop()
    assert json.loads(cursor.read_text()) == {"cursor": f"c{half - 1}"}
    assert [e.report_domain for e in sink.events] == ["may-trusted.example.test"]
    assert sessions.counters.not_understood == 1  # the "not json" line

    write_entries(fake_journalctl, entries)
    second = JournalFollower(sessions, cursor, units=["postfix@-.service"])
    assert second.command()[-2:] == ["--after-cursor", f"c{half - 1}"]
    await second.start()
    await _until(lambda: len(sink.events) >= 2)
    await second.stop()
    assert [e.report_domain for e in sink.events] == [
        "may-trusted.example.test",
        "may-untrusted.example.test",
    ]
    calls = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert calls[0][:4] == ["-f", "-o", "json", "--no-pager"]
    assert calls[0][4:6] == ["--unit", "postfix@-.service"]


def test_journal_record_decodes_byte_array_messages() -> None:
    entry = _entry("c", "x")
    entry_bytes: dict[str, object] = dict(entry, MESSAGE=list("caf\xe9 \xff".encode("latin-1")))
    record = journal_record(entry_bytes)
    assert record is not None
    assert record.message == "caf\ufffd \ufffd"
    assert (record.host, record.program, record.pid) == ("relay", "postfix/smtp", 99)
    assert record.timestamp == 1795435200.0
    assert journal_record({"MESSAGE": "x"}) is None


# --- end to end: a real Postfix instance writing its log while we follow it ------------------


@pytest.mark.slow
async def test_real_postfix_log_followed_into_sessions(tmp_path: Path) -> None:
    sys.path.insert(0, str(TESTS_DIR))
    from support.postfix_instance import PostfixInstance, Receiver, postfix_available

    if not postfix_available() or shutil.which("unshare") is None:
        pytest.skip("needs root, the postfix user and unshare")
    import trustme

    ca = trustme.CA()
    good = Receiver("mx.good.example.test", ca.issue_cert("mx.good.example.test")).start()
    bad = Receiver("mx.bad.example.test", ca.issue_cert("other.example.test")).start()
    hosts = {"mx.good.example.test": "127.0.0.1", "mx.bad.example.test": "127.0.0.1"}
    pf_root = Path(tempfile.mkdtemp(prefix="pf"))  # tmp_path is not searchable by postfix
    pf = PostfixInstance(pf_root, hosts=hosts, ca_file=pf_root / "ca.pem")
    pf.configure()
    ca.cert_pem.write_to_path(str(pf_root / "ca.pem"))
    routes = {"good.example.test": good, "bad.example.test": bad}
    hops = {d: f"[mx.{d}]:{r.port}" for d, r in routes.items()}
    pf.settings["transport_maps"] = pf.write_table(
        "transport", {d: f"smtp:{h}" for d, h in hops.items()}
    )
    pf.settings["smtp_tls_policy_maps"] = pf.write_table(
        "tls", {h: f"secure match=mx.{d}" for d, h in hops.items()}
    )
    sink = Sink()
    sts = {"good.example.test", "bad.example.test"}

    def policy_at(domain: str, when: float) -> PolicyRef | None:
        return PolicyRef(PolicyType.STS, domain) if domain in sts else None

    sessions = MaillogSessions(policy_at, sink)
    try:
        await asyncio.to_thread(pf.start)
        follower = FileFollower(LogFile(pf.maillog, tmp_path / "pos"), sessions, interval=0.05)
        await follower.start()
        for domain in routes:
            await asyncio.to_thread(pf.submit, "s@sender.example.test", f"u@{domain}")
        await _until(lambda: len(sink.events) >= 2)
        await follower.stop()
    finally:
        await asyncio.to_thread(pf.stop)
        good.stop()
        bad.stop()
        shutil.rmtree(pf_root, ignore_errors=True)
    got = sorted(
        (e.report_domain, e.success, [f.result_type.value for f in e.failures]) for e in sink.events
    )
    assert got == [
        ("bad.example.test", False, ["certificate-host-mismatch"]),
        ("good.example.test", True, []),
    ]
