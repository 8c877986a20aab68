"""`generate`: the pure builder (refusals, warnings, diff) and the command with a loopback DNS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.discovery.http_rules import MAX_BODY
from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.host.documents import POLICY_FILE, PolicyDocuments
from mta_sts_policyd.reports_in.readiness import Verdict
from mta_sts_policyd.sts import Mode, parse_policy
from mta_sts_policyd.tools.generate import (
    Request,
    build,
    enforce_refusals,
    kept_settings,
    review,
    seconds_and_days,
    switches_to_enforce,
)
from mta_sts_policyd.tools.policy_id import policy_id
from support.dns_server import DnsServer


def test_policy_text_and_record() -> None:
    out = build(
        Request("example.com", Mode.ENFORCE, ("MX1.example.com.", "*.example.net")),
        current_mx=("mx1.example.com", "a.example.net"),
    )
    assert out.text == (
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\n"
        "max_age: 604800\r\n"
    )
    assert out.policy_id == policy_id(parse_policy(out.text.encode()))
    assert out.txt_record == f'_mta-sts.example.com. 3600 IN TXT "v=STSv1; id={out.policy_id}"'
    assert out.refusals == [] and out.warnings == []


def test_enforce_refused_when_an_mx_is_not_covered() -> None:
    out = build(
        Request("example.com", Mode.ENFORCE, ("*.example.com",)),
        current_mx=("mx1.example.com", "a.b.example.com"),
    )
    assert out.refusals == [
        "MX host a.b.example.com is not covered by any mx line: compliant senders would defer "
        "its mail (--uncovered-mx a.b.example.com if that is meant)"
    ]
    assert out.refused(force=True)  # --force passes the readiness only, never this
    testing = build(
        Request("example.com", Mode.TESTING, ("*.example.com",)), current_mx=("a.b.example.com",)
    )
    assert testing.refusals == []


def test_only_naming_the_uncovered_mx_lets_it_pass() -> None:
    """Leaving an MX host out of an enforce policy defers its mail: a decision of its own,
    made by naming that host, not a side effect of --force."""
    current = ("mx1.example.com", "mx2.example.com", "mx3.example.com")
    request = Request("example.com", Mode.ENFORCE, ("mx1.example.com",))
    named = build(
        Request(**{**request.__dict__, "uncovered": ("MX2.example.com.", "mx9.example.com")}),
        current,
    )
    assert named.refusals == [
        "MX host mx3.example.com is not covered by any mx line: compliant senders would defer "
        "its mail (--uncovered-mx mx3.example.com if that is meant)"
    ]
    assert named.warnings == [
        "MX host mx2.example.com is not covered by any mx line: compliant senders will defer "
        "its mail (--uncovered-mx)",
        "--uncovered-mx mx9.example.com: not an MX host this policy leaves uncovered; "
        "nothing allowed",
    ]
    both = build(
        Request(**{**request.__dict__, "uncovered": ("mx2.example.com", "mx3.example.com")}),
        current,
    )
    assert both.refusals == [] and not both.refused(force=False)
    both.readiness.append("TLS reports: not ready")
    assert both.refused(force=False) and not both.refused(force=True)


def test_enforce_with_mx_unknown_waits_for_the_lookup_or_force() -> None:
    """An unverified MX set is missing evidence, like the reports' verdict: `--force` goes ahead
    (a set-up without DNS); a host known to be uncovered is not, and `--force` never passes it."""
    out = build(Request("example.com", Mode.ENFORCE, ("mx.example.com",)), current_mx=None)
    assert out.refusals == [] and "could not be looked up" in out.readiness[0]
    assert out.refused(force=False) and not out.refused(force=True)
    testing = build(Request("example.com", Mode.TESTING, ("mx.example.com",)), current_mx=None)
    assert testing.readiness == [] and not testing.refused(force=False)


def test_short_max_age_in_enforce_warns() -> None:
    out = build(Request("e.com", Mode.ENFORCE, ("mx.e.com",), 3600), current_mx=("mx.e.com",))
    assert "under one day" in out.warnings[0]
    assert build(Request("e.com", Mode.TESTING, ("mx.e.com",), 3600), ("mx.e.com",)).warnings == []


def test_mode_none_names_the_old_max_age() -> None:
    old = b"version: STSv1\nmode: enforce\nmx: mx.e.com\nmax_age: 1209600\n"
    out = build(Request("e.com", Mode.NONE, (), 86400), ("mx.e.com",), existing=old)
    assert "keep serving this file for the old max_age, 1209600 s (14 days)," in out.warnings[0]
    plain = build(Request("e.com", Mode.NONE, (), 86400), ("mx.e.com",))
    assert "previous policy's max_age" in plain.warnings[0]
    one_day = old.replace(b"1209600", b"86400")
    out = build(Request("e.com", Mode.NONE, (), 86400), ("mx.e.com",), existing=one_day)
    assert "86400 s (1 day)," in out.warnings[0]


def test_durations_read_as_seconds_and_days() -> None:
    assert seconds_and_days(86400) == "86400 s (1 day)"
    assert seconds_and_days(604800) == "604800 s (7 days)"
    assert seconds_and_days(3600) == "3600 s (0.04 days)"
    assert seconds_and_days(0) == "0 s (0 days)"


def test_what_is_not_given_is_kept_from_the_current_policy() -> None:
    """Changing the MX lines must not quietly drop enforce or change max_age."""
    served = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.e.com\r\nmax_age: 1209600\r\n"
    assert kept_settings(served, None, None) == (
        Mode.ENFORCE,
        1209600,
        "mode enforce and max_age 1209600 s (14 days) kept from the current policy "
        "(--mode, --max-age change them)",
    )
    assert kept_settings(served, Mode.TESTING, None)[:2] == (Mode.TESTING, 1209600)
    assert kept_settings(served, None, 86400)[:2] == (Mode.ENFORCE, 86400)
    assert kept_settings(served, Mode.NONE, 86400) == (Mode.NONE, 86400, None)
    assert kept_settings(None, None, None) == (Mode.TESTING, 604800, None)
    with pytest.raises(PolicySyntaxError, match="its mode cannot be kept: give --mode"):
        kept_settings(b"version: STSv1\nmode: sometimes\n", None, None)
    assert kept_settings(b"\x00\xff", Mode.TESTING, None) == (Mode.TESTING, 604800, None)


def test_diff_against_existing() -> None:
    old = b"version: STSv1\r\nmode: testing\r\nmx: mx.e.com\r\nmax_age: 86400\r\n"
    out = build(Request("e.com", Mode.ENFORCE, ("mx.e.com",), 86400), ("mx.e.com",), old)
    assert "-mode: testing\n" in out.diff and "+mode: enforce\n" in out.diff
    assert out.previous_id == policy_id(parse_policy(old)) != out.policy_id


@pytest.mark.parametrize("mx", ["bad host", "*.*.example.com", "[1.2.3.4]"])
def test_invalid_patterns_are_refused(mx: str) -> None:
    with pytest.raises(PolicySyntaxError) as refused:
        build(Request("e.com", Mode.TESTING, (mx,)), ("mx.e.com",))
    assert refused.value.line == 0  # named as given, not as a line of the rendered file
    assert str(refused.value).startswith(f"mx {mx!r} is not a valid pattern: ")


def test_a_file_larger_than_senders_read_is_refused_at_the_same_byte_as_the_host(
    tmp_path: Path,
) -> None:
    """RFC 8461 §3.3: senders stop at MAX_BODY. generate/publish refuse what the host would
    refuse (one rule, discovery/http_rules.size_problem); exactly MAX_BODY is fine."""
    head = "version: STSv1\r\nmode: testing\r\nmax_age: 86400\r\n"
    filler = MAX_BODY - len(head) - len("mx: m.e.com\r\n")
    exact = (
        head + "x-pad: " + "p" * (filler - len("x-pad: \r\n")) + "\r\nmx: m.e.com\r\n"
    ).encode()
    assert len(exact) == MAX_BODY
    folder = tmp_path / "e.com" / POLICY_FILE
    folder.parent.mkdir(parents=True)
    documents = PolicyDocuments(tmp_path)
    for body, accepted in ((exact, True), (exact + b"\n", False)):
        folder.write_bytes(body)
        documents.reload(force=True)
        assert (documents.get("mta-sts.e.com") == body) is accepted
        if accepted:
            review("e.com", body, ("m.e.com",))
            continue
        with pytest.raises(PolicySyntaxError) as refused:
            review("e.com", body, ("m.e.com",))
        assert str(refused.value) == (
            f"the policy file is {MAX_BODY + 1} bytes, larger than the {MAX_BODY} bytes a "
            "sender reads (RFC 8461 §3.3)"
        )


def test_the_diff_escapes_what_a_damaged_file_holds() -> None:
    damaged = b"version: STSv1\nmode: te\x00sting\x1b[2J\nmx: mx.e.com\xff\nmax_age: 86400\n"
    out = build(Request("e.com", Mode.TESTING, ("mx.e.com",), 86400), ("mx.e.com",), damaged)
    removed = [line for line in out.diff if line.startswith("-") and not line.startswith("---")]
    assert removed == ["-mode: te\\x00sting\\x1b[2J\n", "-mx: mx.e.com\\xff\n"]
    assert all(c.isprintable() or c == "\n" for c in "".join(out.diff))
    assert out.previous_id is None


# --- the command ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_machine_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands without -c read the default config path and state directory; here an empty
    one of the test's own, so a reports-in store on this machine changes nothing."""
    config = tmp_path / "default-config.toml"
    config.write_text(f'[cache]\nstate_dir = "{tmp_path / "default-state"}"\n')
    monkeypatch.setattr("mta_sts_policyd.config.settings.DEFAULT_CONFIG_PATH", config)


@pytest.fixture
def mx_dns() -> DnsServer:
    with DnsServer() as server:
        server.set_mx("example.com", (10, "mx1.example.com"), (20, "mx2.example.com"))
        yield server


def _run(dns: DnsServer, *args: str) -> int:
    return main(["generate", "--nameserver", dns.nameserver, *args])


def test_command_defaults_to_dns_mx_and_writes(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(mx_dns, "--domain", "example.com", "--write", str(tmp_path))
    out = capsys.readouterr().out
    written = tmp_path / "example.com/.well-known/mta-sts.txt"
    assert code == 0 and "mode: testing" in out
    policy = parse_policy(written.read_bytes())
    assert policy.mx == ("mx1.example.com", "mx2.example.com")
    assert f"id={policy_id(policy)}" in out


def test_force_passes_the_readiness_only_an_uncovered_mx_must_be_named(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--force means one thing in generate and publish: enforce without a READY verdict. An
    MX host left out of an enforce policy (its mail deferred) is refused even then, until the
    operator names it with --uncovered-mx."""
    args = ("--domain", "example.com", "--mode", "enforce", "--mx", "mx1.example.com")
    args += ("--write", str(tmp_path))
    assert _run(mx_dns, *args) == 1
    assert "mx2.example.com is not covered" in capsys.readouterr().err
    assert _run(mx_dns, *args, "--force") == 1
    err = capsys.readouterr().err
    assert "generate: refused: MX host mx2.example.com is not covered" in err
    assert "--uncovered-mx mx2.example.com if that is meant" in err
    assert "generate: warning (forced): no policy is served for example.com yet" in err
    assert not (tmp_path / "example.com").exists()
    assert _run(mx_dns, *args, "--force", "--uncovered-mx", "mx2.example.com") == 0
    err = capsys.readouterr().err
    assert "generate: warning: MX host mx2.example.com is not covered" in err
    assert "mx: mx1.example.com" in (tmp_path / "example.com/.well-known/mta-sts.txt").read_text()


def test_command_json_shows_diff_with_written_file(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(mx_dns, "--domain", "example.com", "--write", str(tmp_path)) == 0
    first = capsys.readouterr()
    assert (
        _run(
            mx_dns,
            "--domain",
            "example.com",
            "--mode",
            "enforce",
            "--json",
            "--write",
            str(tmp_path),
            "--force",
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert "+mode: enforce" in data["diff"] and data["previous_id"] in first.out
    assert data["id"] != data["previous_id"] and data["refused"] is False
    assert "no TLS reports are kept here" in data["refusals"][0]  # forced past, still shown


def test_command_usage_errors(mx_dns: DnsServer) -> None:
    assert _run(mx_dns, "--domain", "not a domain") == 64
    assert _run(mx_dns, "--domain", "example.com", "--mx", "bad host") == 64
    assert _run(mx_dns, "--domain", "example.com", "--max-age", "-1") == 64
    assert _run(mx_dns, "--domain", "example.com", "--existing", "/nonexistent/policy") == 64
    mx_dns.fail("example.com", "servfail")
    assert _run(mx_dns, "--domain", "example.com") == 75


def test_a_domain_that_does_not_exist_needs_mx(
    mx_dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """NXDOMAIN is not "no MX record" (no implicit MX to the domain itself): a typo or a zone
    not yet delegated. With --mx the policy is still made (written before the zone exists)."""
    assert _run(mx_dns, "--domain", "exmaple.com") == 64
    err = capsys.readouterr().err
    assert "exmaple.com: the domain does not exist in DNS (NXDOMAIN); give --mx" in err
    assert _run(mx_dns, "--domain", "exmaple.com", "--mx", "mx1.exmaple.com") == 0
    assert "mx: mx1.exmaple.com" in capsys.readouterr().out


SERVED = [
    "version: STSv1",
    "mode: testing",
    "mx: mx1.example.com",
    "mx: mx2.example.com",
    "max_age: 604800",
]


def _store_reports(state: Path, days: int, orgs: tuple[str, ...], failing: bool = False) -> None:
    from datetime import UTC, datetime, timedelta

    from mta_sts_policyd.reports_in.parse import parse_report
    from mta_sts_policyd.reports_in.store import ReportsInStore
    from mta_sts_policyd.state_files import REPORTS_IN_STORE_NAME
    from support.received_reports import failure, report, sts_policy

    store = ReportsInStore(state / REPORTS_IN_STORE_NAME)
    today = datetime.now(UTC).date()
    for i in range(days):
        for org in orgs:
            details = [failure("certificate-expired", mx="mx2.example.com")] if failing else []
            doc = report(
                org,
                today - timedelta(days=i + 1),
                details=details,
                policy=sts_policy(lines=SERVED, mx=["mx1.example.com"]),
            )
            store.add(parse_report(json.dumps(doc).encode()), "test", 0.0)
    store.close()


def _enforce(state: Path, www: Path) -> tuple[str, ...]:
    return (
        "--state-dir",
        str(state),
        "--domain",
        "example.com",
        "--mode",
        "enforce",
        "--write",
        str(www),
    )


def _served(tmp_path: Path) -> Path:
    target = tmp_path / "www" / "example.com" / ".well-known" / "mta-sts.txt"
    target.parent.mkdir(parents=True)
    target.write_text("\r\n".join(SERVED) + "\r\n")
    return tmp_path / "www"


def _enforce_with_reports(
    dns: DnsServer, tmp_path: Path, days: int, failing: bool, *extra: str
) -> tuple[int, Path]:
    """generate --mode enforce over a served testing policy, with `days` of stored reports."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    if not (state / "reports-in.sqlite").exists():
        _store_reports(state, days, ("Org A", "Org B"), failing=failing)
    www = tmp_path / "www"
    if not www.exists():
        _served(tmp_path)
    args = ("--state-dir", str(state), "--domain", "example.com", "--mode", "enforce")
    code = _run(dns, *args, "--write", str(www), *extra)
    return code, www / "example.com/.well-known/mta-sts.txt"


@pytest.mark.parametrize(
    ("days", "failing", "refusal"),
    [
        (14, True, "TLS reports: Org A saw certificate-expired on mx2.example.com on 14 day(s)"),
        (3, False, "TLS reports: 3 day(s) of reports about the served policy, 14 needed"),
    ],
)
def test_enforce_is_refused_until_the_reports_say_it_is_safe(
    mx_dns: DnsServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    days: int,
    failing: bool,
    refusal: str,
) -> None:
    code, served = _enforce_with_reports(mx_dns, tmp_path, days, failing)
    assert code == 1 and refusal in capsys.readouterr().err
    assert "mode: testing" in served.read_text()
    code, served = _enforce_with_reports(mx_dns, tmp_path, days, failing, "--force")
    assert code == 0 and "mode: enforce" in served.read_text()


def test_enforce_goes_ahead_when_the_reports_are_clean(mx_dns: DnsServer, tmp_path: Path) -> None:
    code, served = _enforce_with_reports(mx_dns, tmp_path, 14, False)
    assert code == 0 and "mode: enforce" in served.read_text()


TESTING_FILE = ("\r\n".join(SERVED) + "\r\n").encode()
ENFORCE_FILE = TESTING_FILE.replace(b"mode: testing", b"mode: enforce")


def test_the_switch_to_enforce_waits_for_evidence() -> None:
    """One rule for generate and publish: nothing served, no reports kept, or a NOT READY
    verdict refuse the switch; a policy already enforced is no switch."""
    [nothing] = enforce_refusals("example.com", None, None)
    assert "no policy is served for example.com yet" in nothing
    [no_store] = enforce_refusals("example.com", TESTING_FILE, None)
    assert "no TLS reports are kept here" in no_store and "--force" in no_store
    not_ready = Verdict("example.com", False, ("3 day(s) of reports",), 3, ("Org A",), 9, 0)
    assert enforce_refusals("example.com", TESTING_FILE, not_ready) == [
        "TLS reports: 3 day(s) of reports"
    ]
    ready = Verdict("example.com", True, (), 14, ("Org A", "Org B"), 90, 0)
    assert enforce_refusals("example.com", TESTING_FILE, ready) == []
    assert enforce_refusals("example.com", ENFORCE_FILE, None) == []
    assert not switches_to_enforce(ENFORCE_FILE)
    assert switches_to_enforce(b"not a policy") and switches_to_enforce(None)


def test_command_refuses_the_switch_without_reports(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    www = _served(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    assert _run(mx_dns, *_enforce(state, www)) == 1
    assert "refused: no TLS reports are kept here" in capsys.readouterr().err
    served = www / "example.com/.well-known/mta-sts.txt"
    assert "mode: testing" in served.read_text()
    assert _run(mx_dns, *_enforce(state, www), "--force") == 0
    assert "mode: enforce" in served.read_text()
    # a change to the enforced policy (a third MX) is no switch: no reports needed
    mx_dns.set_mx(
        "example.com", (10, "mx1.example.com"), (20, "mx2.example.com"), (30, "mx3.e.com")
    )
    assert _run(mx_dns, *_enforce(state, www)) == 0
    assert "mx: mx3.e.com" in served.read_text()


def test_command_without_the_served_policy_cannot_judge_the_switch(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(mx_dns, "--domain", "example.com", "--mode", "enforce") == 1
    assert "the policy served for example.com now is unknown" in capsys.readouterr().err
    assert _run(mx_dns, "--domain", "example.com", "--mode", "enforce", "--force") == 0
    www = tmp_path / "www"
    assert _run(mx_dns, "--domain", "example.com", "--mode", "enforce", "--write", str(www)) == 1
    assert "no policy is served for example.com yet" in capsys.readouterr().err
    assert not www.exists()


def test_command_sees_implicit_and_null_mx_as_check_does(
    mx_dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """No MX record: senders deliver to the domain itself (RFC 5321 §5.1), so that is the MX
    host to cover, as `check` says (MX_IMPLICIT); a null MX (RFC 7505) has none."""
    mx_dns.set_a("bare.example.com", "192.0.2.1")
    assert _run(mx_dns, "--domain", "bare.example.com") == 0
    assert "mx: bare.example.com\n" in capsys.readouterr().out
    args = ("--domain", "bare.example.com", "--mode", "enforce", "--mx", "mx.example.com")
    assert _run(mx_dns, *args, "--json", "--force") == 1
    refusals = json.loads(capsys.readouterr().out)["refusals"]
    assert "MX host bare.example.com is not covered by any mx line" in refusals[0]
    mx_dns.set_mx("nomail.example.com", (0, "."))
    assert _run(mx_dns, "--domain", "nomail.example.com") == 64
    assert "has no MX hosts; give --mx" in capsys.readouterr().err


def test_command_without_mode_keeps_the_current_mode_and_max_age(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Adding an MX to an enforced policy keeps it enforced, with its max_age; the diff and a
    note say so. A current file that is no policy cannot say its mode: give --mode (64)."""
    target = tmp_path / "example.com/.well-known/mta-sts.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes(
        b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 1209600\r\n"
    )
    args = ("--domain", "example.com", "--write", str(tmp_path))
    assert _run(mx_dns, *args) == 0
    policy = parse_policy(target.read_bytes())
    assert (policy.mode, policy.max_age) == (Mode.ENFORCE, 1209600)
    assert policy.mx == ("mx1.example.com", "mx2.example.com")
    captured = capsys.readouterr()
    assert "# +mx: mx2.example.com" in captured.out and "# -mode" not in captured.out
    assert "note: mode enforce and max_age 1209600 s (14 days) kept" in captured.err
    target.write_bytes(b"version: STSv1\nmode: sometimes\n")
    assert _run(mx_dns, *args) == 64
    assert "its mode cannot be kept: give --mode" in capsys.readouterr().err
    assert target.read_bytes() == b"version: STSv1\nmode: sometimes\n"
    assert _run(mx_dns, *args, "--mode", "testing") == 0
    assert parse_policy(target.read_bytes()).max_age == 604800


def test_command_refuses_a_policy_larger_than_senders_read(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    many = [arg for n in range(5000) for arg in ("--mx", f"mx{n}.example.com")]
    assert _run(mx_dns, "--domain", "example.com", "--write", str(tmp_path), *many) == 64
    err = capsys.readouterr().err
    assert "bytes, larger than the 65536 bytes a sender reads (RFC 8461 §3.3)" in err
    assert not (tmp_path / "example.com").exists()


def test_command_names_a_bad_mx_argument_not_a_line(
    mx_dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(mx_dns, "--domain", "example.com", "--mx", "mx.bücher.test") == 64
    err = capsys.readouterr().err
    assert "argument --mx: 'mx.bücher.test' is not an mx pattern: non-ASCII" in err
    assert "as A-labels: mx.xn--bcher-kva.test" in err and "line " not in err
    assert _run(mx_dns, "--domain", "example.com", "--mx", "*.bücher.test") == 64
    assert "as A-labels: *.xn--bcher-kva.test" in capsys.readouterr().err
    assert _run(mx_dns, "--domain", "example.com", "--mx", "mx1.example.com.") == 0


def test_command_json_says_ok_like_every_json_answer(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: every --json document carries `ok` (and `exit_code`); a refusal also `error`."""
    assert _run(mx_dns, "--domain", "example.com", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["ok"], data["exit_code"], data["refused"]) == (True, 0, False)
    assert "error" not in data
    assert _run(mx_dns, "--domain", "example.com", "--mode", "enforce", "--json") == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["ok"], data["exit_code"], data["refused"]) == (False, 1, True)
    assert data["error"].startswith("refused: the policy served for example.com now is unknown")


def test_command_shows_a_damaged_current_file_escaped(
    mx_dns: DnsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "damaged.txt"
    existing.write_bytes(b"version: STSv1\nmode: test\x00ing\xff\nmax_age: 1\n")
    args = ("--domain", "example.com", "--mode", "testing", "--existing", str(existing))
    assert _run(mx_dns, *args) == 0
    out = capsys.readouterr().out
    assert "# -mode: test\\x00ing\\xff" in out and "\x00" not in out and "\ufffd" not in out
