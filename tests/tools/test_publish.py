"""`publish` end to end on loopback: the running host serves the new file, it is fetched back,
only then the TXT record goes to the hook, and the run ends when the (test) authoritative
server answers the new id."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import dns.rdata
import dns.rdatatype
import pytest
import trustme

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.host.run import HostSettings, PolicyHost
from mta_sts_policyd.sts.policy import parse_policy
from mta_sts_policyd.tools.policy_id import policy_id
from mta_sts_policyd.tools.publish import not_the_new_file
from support.certs import CertFactory
from support.dns_server import DnsServer, Record
from support.ports import free_port

D = "a.test"


class World:
    def __init__(self, root: Path, ca: trustme.CA, dns_server: DnsServer) -> None:
        self.root, self.dns = root, dns_server
        self.port = free_port()
        self.ca_path = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        folder = root / "certs" / f"mta-sts.{D}"
        folder.mkdir(parents=True)
        (folder / CHAIN_FILE).write_bytes(CertFactory(ca, root).chain_pem("valid", (folder.name,)))
        shutil.copy(root / "leaf.key", folder / KEY_FILE)
        (root / "policies").mkdir()
        ns = dns.rdata.from_text("IN", "NS", f"ns1.{D}.")
        dns_server.set(D, Record(dns.rdatatype.NS, ns))
        dns_server.set_a(f"ns1.{D}", "127.0.0.1")
        dns_server.set_a(f"mta-sts.{D}", "127.0.0.1")
        dns_server.set_mx(D, (10, f"mx1.{D}"))
        self.hook_file = root / "hook.txt"
        self.config = root / "config.toml"
        self.config.write_text(
            f'[cache]\nstate_dir = "{root / "state"}"\n[host]\npolicy_dir = "{root / "policies"}"\n'
        )

    @property
    def served(self) -> Path:
        return self.root / "policies" / D / POLICY_FILE

    def settings(self) -> HostSettings:
        return HostSettings(
            listen=(("127.0.0.1", self.port),),
            policy_dir=self.root / "policies",
            cert_dirs=(self.root / "certs",),
            poll_interval=0.2,
        )

    async def publish(self, *args: str, wait: float = 20) -> int:
        argv = [
            "publish", D, "-c", str(self.config), "--nameserver", self.dns.nameserver,
            "--ca-file", str(self.ca_path), "--https-port", str(self.port),
            "--dns-port", str(self.dns.address[1]), "--timeout", str(wait),
            "--hook", f'printf "%s" "$MTA_STS_TXT_VALUE" > {self.hook_file}', *args,
        ]  # fmt: skip
        return await asyncio.to_thread(main, argv)

    async def publish_to_the_end(self, *args: str) -> int:
        """`publish`, with the test's DNS operator setting the TXT record the hook got."""
        run = asyncio.create_task(self.publish(*args))
        for _ in range(200):
            if self.hook_file.exists() or run.done():
                break
            await asyncio.sleep(0.1)
        if self.hook_file.exists():
            self.dns.set_txt(f"_mta-sts.{D}", self.hook_file.read_text())
        return await run

    def serve_now(self, text: str) -> bytes:
        """`text` as the file served now (LF ends), as an earlier publish left it."""
        self.served.parent.mkdir(parents=True, exist_ok=True)
        self.served.write_text(text)
        return self.served.read_bytes()


@pytest.fixture
async def world(
    tmp_path: Path, trust_ca: trustme.CA, dns_server: DnsServer
) -> AsyncIterator[World]:
    w = World(tmp_path, trust_ca, dns_server)
    host = PolicyHost(w.settings())
    task = asyncio.create_task(host.serve())
    await asyncio.sleep(0.3)
    yield w
    host.stop()
    await task


async def test_serve_fetch_back_then_txt_then_confirmed(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    run = asyncio.create_task(world.publish("--mode", "testing", "--mx", f"mx1.{D}"))
    for _ in range(200):  # the hook is the test's DNS operator
        if world.hook_file.exists() or run.done():
            break
        await asyncio.sleep(0.1)
    value = world.hook_file.read_text()
    assert value.startswith("v=STSv1; id=mspd1")
    world.dns.set_txt(f"_mta-sts.{D}", value)
    assert await run == 0
    out = capsys.readouterr().out
    served_at = out.index("served: https://mta-sts.a.test/.well-known/mta-sts.txt at 127.0.0.1")
    assert served_at < out.index("TXT record to set: _mta-sts.a.test.") < out.index("confirmed:")
    assert "mode: testing" in world.served.read_text()


async def test_a_file_nobody_serves_never_gets_its_txt_record(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.dns.set_a(f"mta-sts.{D}", "127.0.0.1", "127.0.0.2")  # .2: nothing listens
    code = await world.publish("--mode", "testing", "--mx", f"mx1.{D}", wait=1.5)
    assert code == 75
    assert not world.hook_file.exists()
    captured = capsys.readouterr()
    assert "TXT record to set" not in captured.out
    assert "not served everywhere" in captured.err and "127.0.0.2" in captured.err


async def test_enforce_is_refused_without_clean_reports(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = world.root / "edited.txt"
    policy.write_text(f"version: STSv1\nmode: enforce\nmx: mx1.{D}\nmax_age: 604800\n")
    assert await world.publish("--policy", str(policy)) == 1
    assert "publish: not ready for enforce; --force goes ahead" in capsys.readouterr().err
    assert not world.served.exists() and not world.hook_file.exists()


async def test_the_switch_waits_for_reports_like_generate(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A testing policy is served, no TLS reports are kept here: the same refusal as
    `generate --mode enforce` (tools/generate.py enforce_refusals)."""
    world.served.parent.mkdir(parents=True)
    world.served.write_text(f"version: STSv1\nmode: testing\nmx: mx1.{D}\nmax_age: 604800\n")
    policy = world.root / "edited.txt"
    policy.write_text(f"version: STSv1\nmode: enforce\nmx: mx1.{D}\nmax_age: 604800\n")
    assert await world.publish("--policy", str(policy)) == 1
    err = capsys.readouterr().err
    assert "publish: refused: no TLS reports are kept here" in err
    assert "publish: not ready for enforce" in err
    assert "mode: testing" in world.served.read_text() and not world.hook_file.exists()


async def test_a_broken_edited_file_is_refused_before_anything(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = world.root / "edited.txt"
    policy.write_text("version: STSv1\nmode: sometimes\n")
    assert await world.publish("--policy", str(policy), "--force") == 64
    assert not world.served.exists()


async def test_a_policy_folder_that_cannot_be_written_is_exit_73(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a temporary failure (75): nothing changes until the folder is fixed."""
    (world.root / "policies" / D).write_text("a file where the domain's folder belongs\n")
    code = await world.publish("--mode", "testing", "--mx", f"mx1.{D}")
    assert code == 73
    err = capsys.readouterr().err
    assert "[host] policy_dir:" in err and "cannot write" in err
    assert not world.hook_file.exists()


async def test_without_mx_hosts_it_exits_like_generate(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same refusal, the same code as `generate`: a domain that does not exist is the
    caller's to fix (64); a lookup that failed is "try again" (75). Nothing is written."""
    world.dns.fail(f"nope.{D}", "nxdomain")
    argv = ["publish", f"nope.{D}", "-c", str(world.config), "--nameserver", world.dns.nameserver]
    assert await asyncio.to_thread(main, argv) == 64
    assert "the domain does not exist in DNS (NXDOMAIN); give --mx" in capsys.readouterr().err
    world.dns.fail(f"down.{D}", "servfail")
    argv[1] = f"down.{D}"
    assert await asyncio.to_thread(main, argv) == 75
    assert list((world.root / "policies").iterdir()) == []


async def test_force_passes_the_readiness_never_an_uncovered_mx(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's case: MX hosts mx1 and mx2, `--mode enforce --mx mx1 --force`. --force
    means what it means in generate (enforce without a READY verdict); leaving mx2 uncovered
    defers its mail and is refused until mx2 is named with --uncovered-mx."""
    world.dns.set_mx(D, (10, f"mx1.{D}"), (20, f"mx2.{D}"))
    world.serve_now(f"version: STSv1\nmode: testing\nmx: mx1.{D}\nmx: mx2.{D}\nmax_age: 86400\n")
    args = ("--mode", "enforce", "--mx", f"mx1.{D}", "--force")
    assert await world.publish(*args) == 1
    err = capsys.readouterr().err
    assert f"publish: refused: MX host mx2.{D} is not covered by any mx line" in err
    assert "publish: warning (forced): no TLS reports are kept here" in err
    assert "mode: testing" in world.served.read_text() and not world.hook_file.exists()
    assert await world.publish_to_the_end(*args, "--uncovered-mx", f"mx2.{D}") == 0
    err = capsys.readouterr().err
    assert f"publish: warning: MX host mx2.{D} is not covered by any mx line" in err
    served = world.served.read_bytes()
    assert (
        served == f"version: STSv1\r\nmode: enforce\r\nmx: mx1.{D}\r\nmax_age: 86400\r\n".encode()
    )


async def test_an_edited_enforce_file_gets_the_same_coverage_rule(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.dns.set_mx(D, (10, f"mx1.{D}"), (20, f"mx2.{D}"))
    world.serve_now(f"version: STSv1\nmode: enforce\nmx: mx1.{D}\nmx: mx2.{D}\nmax_age: 86400\n")
    policy = world.root / "edited.txt"
    policy.write_text(f"version: STSv1\nmode: enforce\nmx: mx1.{D}\nmax_age: 86400\n")
    assert await world.publish("--policy", str(policy), "--force") == 1
    assert f"refused: MX host mx2.{D} is not covered" in capsys.readouterr().err
    assert f"mx: mx2.{D}" in world.served.read_text() and not world.hook_file.exists()


async def test_mode_none_says_how_long_to_keep_serving_as_generate_does(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.serve_now(f"version: STSv1\nmode: enforce\nmx: mx1.{D}\nmax_age: 1209600\n")
    assert await world.publish_to_the_end("--mode", "none") == 0
    err = capsys.readouterr().err
    assert (
        "publish: warning: mode none withdraws MTA-STS: keep serving this file for the old "
        "max_age, 1209600 s (14 days), before removing the TXT record and the file"
    ) in err
    assert "mode: none" in world.served.read_text()


async def test_without_mode_the_served_mode_and_max_age_are_kept_and_the_diff_shown(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Adding an MX to an enforced policy (docs/host.md: no switch) keeps `enforce` and the
    served max_age; the diff shows the change before anything is written."""
    world.dns.set_mx(D, (10, f"mx1.{D}"), (20, f"mx2.{D}"))
    old = world.serve_now(f"version: STSv1\nmode: enforce\nmx: mx1.{D}\nmax_age: 1209600\n")
    assert await world.publish_to_the_end("--mx", f"mx1.{D}", "--mx", f"mx2.{D}") == 0
    captured = capsys.readouterr()
    assert world.served.read_bytes().decode() == (
        f"version: STSv1\r\nmode: enforce\r\nmx: mx1.{D}\r\nmx: mx2.{D}\r\nmax_age: 1209600\r\n"
    )
    assert f"# changes (id {policy_id(parse_policy(old))} -> " in captured.out
    assert f"# +mx: mx2.{D}" in captured.out and "# -mode" not in captured.out
    assert captured.out.index("# changes") < captured.out.index("writing ")
    assert "note: mode enforce and max_age 1209600 s (14 days) kept" in captured.err


async def test_a_file_larger_than_senders_read_is_refused_before_anything(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's 94 KB policy: the host would refuse it and a restart would leave the
    domain a 404 behind its TXT record. Refused here, with the size and the limit (64)."""
    good = world.serve_now(f"version: STSv1\nmode: testing\nmx: mx1.{D}\nmax_age: 86400\n")
    big = world.root / "big.txt"
    lines = [f"mx: mx{n}.{D}" for n in range(5000)]
    big.write_text("\n".join(["version: STSv1", "mode: testing", *lines, "max_age: 86400", ""]))
    size = big.stat().st_size
    assert await world.publish("--policy", str(big), "--force") == 64
    err = capsys.readouterr().err
    assert f"--policy {big}: the policy file is {size} bytes, larger than the 65536 bytes" in err
    assert world.served.read_bytes() == good and not world.hook_file.exists()


async def test_the_fetch_back_says_why_the_new_file_is_not_served(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """A publish into a folder the host does not read: the host answers 404, and the message
    says that, not only "not the new file"."""
    other = world.root / "other-policies"
    world.config.write_text(
        f'[cache]\nstate_dir = "{world.root / "state"}"\n[host]\npolicy_dir = "{other}"\n'
    )
    code = await world.publish("--mode", "testing", "--mx", f"mx1.{D}", wait=1.5)
    assert code == 75 and not world.hook_file.exists()
    err = capsys.readouterr().err
    assert "127.0.0.1: status 404" in err
    assert f"the host serves no policy for {D} (not re-read yet, or it reads another" in err


def test_what_is_served_instead_is_explained() -> None:
    previous = b"version: STSv1\nmode: testing\nmx: mx1.a.test\nmax_age: 1\n"
    assert "still the previous file" in not_the_new_file(D, 200, previous, previous)
    assert "policy-file-refused" in not_the_new_file(D, 200, previous, previous)
    assert "another host" in not_the_new_file(D, 200, b"other", previous)
    other = not_the_new_file(D, 200, previous, None)
    assert other.startswith(f"status 200, {len(previous)} bytes, not the new file")
