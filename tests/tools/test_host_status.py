"""`host status` against the test DNS server: delegation, the TXT id of what is served, the
certificate; findings with check's codes and Nagios exit codes."""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client import generate_latest

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.net.dns_client import DnsClient, make_resolver
from mta_sts_policyd.sts import parse_policy
from mta_sts_policyd.tools.check.observations import Options
from mta_sts_policyd.tools.host_status.gauges import HostedGauges
from mta_sts_policyd.tools.host_status.judge import Expectations, judge_all
from mta_sts_policyd.tools.host_status.observe import observe_hosted, served
from mta_sts_policyd.tools.policy_id import policy_id
from support.dns_server import DnsServer

POLICY = b"version: STSv1\nmode: testing\nmx: mx1.a.test\nmax_age: 86400\n"
SERVED_ID = policy_id(parse_policy(POLICY))
HOST_IP = "192.0.2.10"


class Hosted:
    def __init__(self, root: Path, ca: trustme.CA, dns: DnsServer) -> None:
        self.root, self.ca, self.dns = root, ca, dns

    def serve(
        self, domain: str, *, cert_days: int | None = 60, body: bytes | None = POLICY
    ) -> None:
        """`body` None: no policy file, only the certificate."""
        if body is not None:
            path = self.root / "policies" / domain / POLICY_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        if cert_days is None:
            return
        name = f"mta-sts.{domain}"
        now = datetime.now(UTC)
        leaf = self.ca.issue_cert(
            name, not_before=now - timedelta(days=90), not_after=now + timedelta(days=cert_days)
        )
        folder = self.root / "certs" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CHAIN_FILE).write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        (folder / KEY_FILE).write_bytes(leaf.private_key_pem.bytes())

    def status(self, *, expect: str = "", args: tuple[str, ...] = ()) -> tuple[int, Any]:
        config = self.root / "config.toml"
        config.write_text(
            f"""
[cache]
state_dir = "{self.root / "state"}"
[host]
state_dir = "{self.root / "host"}"
policy_dir = "{self.root / "policies"}"
cert_dirs = ["{self.root / "certs"}"]
{expect}
"""
        )
        code = main(
            ["host", "status", "-c", str(config), "--nameserver", self.dns.nameserver, *args]
        )
        return code, None

    def run(self, capsys: pytest.CaptureFixture[str], **kw: Any) -> tuple[int, dict[str, Any]]:
        code, _ = self.status(args=("--json",), **kw)
        document = json.loads(capsys.readouterr().out)
        return code, {d["domain"]: d for d in document["domains"]}


@pytest.fixture
def hosted(tmp_path: Path, trust_ca: trustme.CA, dns_server: DnsServer) -> Hosted:
    return Hosted(tmp_path, trust_ca, dns_server)


def codes(entry: dict[str, Any]) -> set[str]:
    return {f["code"] for f in entry["findings"]}


def test_a_delegated_domain_with_the_served_id_and_a_good_certificate_is_ok(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("a.test")
    hosted.dns.set_a("mta-sts.a.test", HOST_IP)
    hosted.dns.set_txt("_mta-sts.a.test", f"v=STSv1; id={SERVED_ID}")
    code, domains = hosted.run(capsys, expect=f'expect_addresses = ["{HOST_IP}"]')
    entry = domains["a.test"]
    assert code == 0, entry
    assert entry["delegation"] == "verified" and entry["id"] == "matches"
    assert entry["txt_id"] == entry["served_id"] == SERVED_ID
    assert 58 <= entry["certificate_days_left"] <= 60


def test_a_cname_to_the_provider_counts_as_delegated(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("a.test")
    hosted.dns.set_cname("mta-sts.a.test", "policies.provider.test")
    hosted.dns.set_a("policies.provider.test", "198.51.100.7")
    hosted.dns.set_txt("_mta-sts.a.test", f"v=STSv1; id={SERVED_ID}")
    code, domains = hosted.run(capsys, expect='expect_cname = ["policies.provider.test."]')
    assert (code, domains["a.test"]["delegation"]) == (0, "verified")


def test_each_problem_gets_checks_code_and_the_worst_sets_the_exit(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("elsewhere.test")
    hosted.dns.set_a("mta-sts.elsewhere.test", "203.0.113.9")
    hosted.dns.set_txt("_mta-sts.elsewhere.test", f"v=STSv1; id={SERVED_ID}")
    hosted.serve("stale.test")
    hosted.dns.set_a("mta-sts.stale.test", HOST_IP)
    stale = policy_id(parse_policy(POLICY.replace(b"testing", b"enforce")))
    hosted.dns.set_txt("_mta-sts.stale.test", f"v=STSv1; id={stale}")
    hosted.serve("handmade.test", cert_days=5)
    hosted.dns.set_a("mta-sts.handmade.test", HOST_IP)
    hosted.dns.set_txt("_mta-sts.handmade.test", "v=STSv1; id=20261201")
    hosted.serve("nocert.test", cert_days=None)
    hosted.dns.set_a("mta-sts.nocert.test", HOST_IP)
    hosted.serve("nodns.test")
    code, domains = hosted.run(capsys, expect=f'expect_addresses = ["{HOST_IP}"]')
    assert code == 2
    assert codes(domains["elsewhere.test"]) == {"HOSTING_ADDRESS_MISMATCH"}
    assert domains["elsewhere.test"]["status"] == "WARNING"
    assert codes(domains["stale.test"]) == {"ID_NOT_BUMPED"}
    handmade = domains["handmade.test"]
    assert codes(handmade) == {"ID_NOT_VERIFIABLE", "POLICY_CERT_EXPIRES"}
    assert handmade["txt_id"] == "20261201" and handmade["id"] == "not-verifiable"
    assert [f["severity"] for f in handmade["findings"]] == ["critical", "info"]  # 5 <= 7 days
    assert codes(domains["nocert.test"]) == {"TXT_MISSING", "POLICY_TLS_FAILED"}
    assert codes(domains["nodns.test"]) == {"TXT_MISSING", "POLICY_HOST_NO_ADDRESS"}
    assert (domains["nodns.test"]["delegation"], domains["nodns.test"]["id"]) == (
        "no-address",
        "no-record",
    )


def test_a_failed_txt_lookup_is_unknown_not_no_record(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("a.test")
    hosted.dns.set_a("mta-sts.a.test", HOST_IP)
    hosted.dns.fail("_mta-sts.a.test", "servfail")
    _, domains = hosted.run(capsys)
    assert domains["a.test"]["id"] == "unknown" and domains["a.test"]["txt_id"] is None


def test_without_expectations_addresses_are_shown_not_judged(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("a.test", cert_days=15)
    hosted.dns.set_a("mta-sts.a.test", "203.0.113.9")
    hosted.dns.set_txt("_mta-sts.a.test", f"v=STSv1; id={SERVED_ID}")
    code, domains = hosted.run(capsys)
    entry = domains["a.test"]
    assert code == 1 and codes(entry) == {"POLICY_CERT_EXPIRES"}  # 15 days: a warning
    assert entry["delegation"] == "not-verified" and entry["addresses"] == ["203.0.113.9"]


def test_text_output_names_the_id_and_the_fix(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("a.test")
    hosted.dns.set_a("mta-sts.a.test", HOST_IP)
    hosted.dns.set_txt("_mta-sts.a.test", "v=STSv1; id=old1")
    code, _ = hosted.status()
    out, err = capsys.readouterr()
    assert "event=" not in err  # the host's INFO log (policies-loaded, ...) is not the report
    assert code == 0  # ID_NOT_VERIFIABLE is info
    assert f"id: old1 (served {SERVED_ID}: not-verifiable)" in out
    assert "info ID_NOT_VERIFIABLE" in out and "certificate: 5" in out


def test_a_refused_policy_file_is_critical_with_the_reason_not_left_out(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("a.test")
    hosted.serve("b.test", body=POLICY.replace(b"max_age: 86400\n", b""))
    for domain in ("a.test", "b.test"):
        hosted.dns.set_a(f"mta-sts.{domain}", HOST_IP)
        hosted.dns.set_txt(f"_mta-sts.{domain}", f"v=STSv1; id={SERVED_ID}")
    code, domains = hosted.run(capsys)
    assert code == 2  # b.test decides it, not the good a.test
    entry = domains["b.test"]
    assert entry["status"] == "CRITICAL" and codes(entry) == {"HOSTED_POLICY_REFUSED"}
    assert (entry["policy"], entry["served_id"], entry["id"]) == ("refused", None, "no-policy")
    message = entry["findings"][0]["message"]
    assert "max_age" in message and str(hosted.root / "policies" / "b.test") in message
    assert domains["a.test"]["status"] == "OK"
    code, _ = hosted.status()
    out = capsys.readouterr().out
    assert code == 2 and "b.test: CRITICAL" in out and "critical HOSTED_POLICY_REFUSED" in out


def test_a_domain_without_its_policy_file_is_reported_while_something_names_it(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its folder deleted: the certificate (or acme_names) still names the domain, and while
    its TXT record is out senders get 404; a retired one (no record, not listed) is left out."""
    hosted.serve("a.test")
    hosted.serve("deleted.test", body=None)
    hosted.dns.set_txt("_mta-sts.deleted.test", f"v=STSv1; id={SERVED_ID}")
    hosted.serve("retired.test", body=None)
    hosted.serve("unsure.test", body=None)
    hosted.dns.fail("_mta-sts.unsure.test", "servfail")
    hosted.dns.set_a("mta-sts.unsure.test", HOST_IP)
    expect = 'acme_directory = "https://ca.test/dir"\nacme_names = ["mta-sts.listed.test"]'
    code, domains = hosted.run(capsys, expect=expect)
    assert code == 2 and set(domains) == {"a.test", "deleted.test", "listed.test", "unsure.test"}
    for domain in ("deleted.test", "listed.test"):
        entry = domains[domain]
        assert entry["status"] == "CRITICAL" and entry["policy"] == "missing", entry
        assert "HOSTED_POLICY_MISSING" in codes(entry)
    assert "senders fetch the policy and get 404" in json.dumps(domains["deleted.test"])
    assert domains["deleted.test"]["txt_id"] == SERVED_ID
    assert "acme_names lists mta-sts.listed.test" in json.dumps(domains["listed.test"])
    assert domains["unsure.test"]["status"] == "UNKNOWN"


def test_only_refused_policies_are_not_no_policies(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("b.test", body=b"version: STSv1\n")
    code, domains = hosted.run(capsys)
    assert code == 2 and codes(domains["b.test"]) >= {"HOSTED_POLICY_REFUSED"}


async def test_a_policy_removed_under_the_running_host_is_a_warning_and_stays_in_its_gauges(
    hosted: Hosted, dns_server: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    hosted.serve("a.test", cert_days=None)
    dns_server.set_txt("_mta-sts.a.test", f"v=STSv1; id={SERVED_ID}")
    documents, certificates = served(hosted.root / "policies", ())
    assert documents.domains == ["a.test"]
    caplog.set_level(logging.INFO)
    shutil.rmtree(hosted.root / "policies" / "a.test")
    documents.reload()
    removed = [r for r in caplog.records if "event=policy-file-removed" in r.getMessage()]
    assert [r.levelno for r in removed] == [logging.WARNING]
    assert "domain=a.test" in removed[0].getMessage()
    gauges = HostedGauges(documents, certificates)
    dns = DnsClient(make_resolver([dns_server.nameserver], 2.0))
    seen = await observe_hosted(documents, certificates, dns)
    gauges.publish(judge_all(seen, Expectations(), Options(), datetime.now(UTC)), time.time())
    text = generate_latest(gauges.registry()).decode()
    assert 'mta_sts_policyd_hosted_domain_status{domain="a.test"} 2.0' in text
    assert 'mta_sts_policyd_hosted_domain_served{domain="a.test"} 0.0' in text


def test_an_expired_certificate_is_said_to_be_expired_with_the_moment(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not `none` with a TLS alert: a host that loaded it before presents it expired."""
    hosted.serve("a.test", cert_days=-2)
    hosted.dns.set_a("mta-sts.a.test", HOST_IP)
    hosted.dns.set_txt("_mta-sts.a.test", f"v=STSv1; id={SERVED_ID}")
    code, domains = hosted.run(capsys)
    entry = domains["a.test"]
    assert code == 2 and codes(entry) == {"POLICY_CERT_EXPIRED"}, entry
    expired_at = entry["certificate_expired_at"]
    assert expired_at.endswith("Z") and expired_at in entry["findings"][0]["message"]
    assert entry["certificate_days_left"] in (-2, -3)
    code, _ = hosted.status()
    out = capsys.readouterr().out
    assert f"certificate: expired at {expired_at}" in out and "TLS alert" not in out


def test_a_refused_certificate_file_is_named_with_why(
    hosted: Hosted, capsys: pytest.CaptureFixture[str]
) -> None:
    hosted.serve("a.test")
    other = hosted.root / "certs" / "mta-sts.a.test"
    leaf = hosted.ca.issue_cert("mta-sts.other.test")
    (other / CHAIN_FILE).write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (other / KEY_FILE).write_bytes(leaf.private_key_pem.bytes())
    _, domains = hosted.run(capsys)
    (message,) = (
        f["message"] for f in domains["a.test"]["findings"] if f["code"] == "POLICY_TLS_FAILED"
    )
    assert "does not cover mta-sts.a.test" in message and str(other) in message


def test_no_policies_is_unknown(hosted: Hosted, capsys: pytest.CaptureFixture[str]) -> None:
    (hosted.root / "policies").mkdir()
    code, _ = hosted.status()
    assert code == 3 and "no policies" in capsys.readouterr().err


class CountingDns(DnsClient):
    """The real client against the test DNS server, counting questions in flight."""

    def __init__(self, nameserver: str) -> None:
        super().__init__(make_resolver([nameserver], 2.0))
        self.in_flight = 0
        self.most = 0
        self.started: list[float] = []
        ask = self._transport.ask

        async def counted(qname: Any, rdtype: Any) -> Any:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.started.append(time.monotonic())
            try:
                return await ask(qname, rdtype)
            finally:
                self.in_flight -= 1

        self._transport.ask = counted  # type: ignore[method-assign]


async def test_the_host_observes_its_domains_a_few_at_a_time_and_paced(
    hosted: Hosted, dns_server: DnsServer
) -> None:
    """The host's own periodic check must not send every domain's questions at once."""
    domains = [f"d{k}.a.test" for k in range(24)]
    for domain in domains:
        hosted.serve(domain, cert_days=None)
        dns_server.set_a(f"mta-sts.{domain}", HOST_IP)
        dns_server.delay(f"mta-sts.{domain}", 0.1)  # slow answers: the bound is what limits
        dns_server.set_txt(f"_mta-sts.{domain}", f"v=STSv1; id={SERVED_ID}")
    documents, certificates = served(hosted.root / "policies", ())
    dns = CountingDns(dns_server.nameserver)
    began = time.monotonic()
    seen = await observe_hosted(documents, certificates, dns, concurrency=4, rate=100.0)
    assert [s.domain for s in seen] == sorted(domains)
    assert all(s.addresses == (HOST_IP,) for s in seen)
    # a domain asks TXT, then A and AAAA together: 4 domains, 8 questions at most (24 without)
    assert dns.most == 8, dns.most
    assert time.monotonic() - began >= 23 / 100.0

    paced = CountingDns(dns_server.nameserver)
    began = time.monotonic()
    await observe_hosted(documents, certificates, paced, concurrency=100, rate=40.0)
    first = sorted(paced.started)[0]
    # the last domain starts no earlier than 23/40 s after the first, whatever the bound
    assert sorted(paced.started)[-1] - first >= 23 / 40.0 - 0.02
    assert paced.most <= 16, paced.most  # ~4 domains start per 0.1 s answer at 40/s
