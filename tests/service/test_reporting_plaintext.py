"""Issue 11 item 12 in the running daemon: a plaintext delivery to a `testing` domain, seen in
Postfix's log, reaches that domain's report as a `starttls-not-supported` failure under its
testing policy.

The daemon runs in-process with its real log follower and store; the testing policy comes from
the loopback DNS/HTTPS servers through a real socketmap lookup; the log lines are the real
capture may-no-starttls.log, re-stamped to now (the policy must be live at the line's time).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import StsWorld
from mta_sts_policyd.config.settings import config_from_mapping
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.postfix.client import SocketmapClient
from mta_sts_policyd.service.daemon import Daemon
from mta_sts_policyd.service.reporting import plaintext_policy_of_testing
from mta_sts_policyd.sts.model import Mode, Policy
from mta_sts_policyd.tlsrpt.model import PolicyType
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support import TESTS_DIR
from support.ports import free_port

pytestmark = pytest.mark.fault

CAPTURE = TESTS_DIR / "fixtures" / "maillog" / "may-no-starttls.log"
DOMAIN = "may-no-starttls.example.test"
MX = "mx1.may-no-starttls.example.test"
TESTING = f"version: STSv1\nmode: testing\nmx: *.{DOMAIN}\nmax_age: 86400\n"


def restamped(now: float) -> str:
    """The capture with its RFC 3164 stamps moved to `now` (UTC), message text untouched."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%b %e %H:%M:%S")
    return "".join(stamp + line[15:] + "\n" for line in CAPTURE.read_text().splitlines())


def config(world: StsWorld, state: Path, maillog: Path) -> dict[str, object]:
    return {
        "server": {"listen": [f"127.0.0.1:{free_port()}"], "sts_attributes": False},
        "discovery": {
            "nameservers": [world.dns.nameserver],
            "ca_file": world.https.ca_pem_path,
            "https_port": world.https.port,
            "dns_timeout": 1.0,
            "fetch_timeout": 2.0,
        },
        "cache": {"state_dir": str(state), "cold_wait": 3.0},
        "probe": {"enabled": False},
        "tlsrpt": {
            "enabled": True,
            "socket": "",
            "organization_name": "Example Sender",
            "contact_info": "tlsrpt@sender.test",
            "envelope_sender": "tlsrpt@sender.test",
            "allow_unsigned": True,
        },
        "maillog": {"enabled": True, "path": str(maillog)},
    }


def ask(address: str, key: str) -> bytes:
    with SocketmapClient(address) as client:
        return client.query(key)


async def test_plaintext_delivery_to_a_testing_domain_is_reported(
    sts_world: StsWorld, tmp_path: Path
) -> None:
    sts_world.publish(DOMAIN, TESTING)
    maillog = tmp_path / "mail.log"
    maillog.write_text("")
    daemon = Daemon(config_from_mapping(config(sts_world, tmp_path / "state", maillog)))
    await daemon.start()
    try:
        host, port = daemon.bound[0]
        assert await asyncio.to_thread(ask, f"{host}:{port}", DOMAIN) == b"NOTFOUND "
        with maillog.open("a") as fh:  # Postfix delivered at `may`, in plaintext
            fh.write(restamped(time.time() + 1))
        await asyncio.sleep(2.5)  # the follower polls every second
    finally:
        await daemon.stop()
    with TlsRptStore(tmp_path / "state" / "tlsrpt.sqlite") as store:
        days = store.domain_days(datetime.now(UTC).date())
    (day,) = days
    (policy,) = day.policies
    assert day.report_domain == DOMAIN
    assert policy.policy.policy_type is PolicyType.STS
    assert "mode: testing" in policy.policy.policy_strings
    assert (policy.successes, policy.failures) == (0, 1)
    ((detail, count),) = policy.details
    assert detail.result_type.value == "starttls-not-supported" and count == 1
    assert detail.receiving_mx_hostname == MX


def test_plaintext_policy_only_for_the_testing_domains_mx_while_live() -> None:
    policy = Policy(Mode.TESTING, 86400, (f"*.{DOMAIN}",), ("version: STSv1", "mode: testing"))
    entry = CacheEntry(DOMAIN, policy=policy, fetched_at=1000.0, expires_at=2000.0)

    class Resolver:
        class cache:
            @staticmethod
            def get(domain: str) -> CacheEntry | None:
                return entry if domain == DOMAIN else None

    shadow_mx = {DOMAIN: ["backup.elsewhere.test"]}
    plaintext = plaintext_policy_of_testing(Resolver(), lambda d: shadow_mx.get(d, []))  # type: ignore[arg-type]
    assert plaintext(DOMAIN, MX, 1500.0) is not None
    assert plaintext(DOMAIN, "backup.elsewhere.test", 1500.0) is not None  # the shadow's MX list
    assert plaintext(DOMAIN, "localhost", 1500.0) is None  # a content filter on the way
    assert plaintext(DOMAIN, MX, 2500.0) is None  # the policy had expired
    assert plaintext("other.test", MX, 1500.0) is None
    entry.policy = Policy(Mode.ENFORCE, 86400, policy.mx, policy.lines)
    assert plaintext(DOMAIN, MX, 1500.0) is None  # enforce: Postfix never delivers in plaintext
