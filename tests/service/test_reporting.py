"""TLS-RPT inside the running daemon: datagrams and discovery failures reach the daily store.

With the datagram socket configured (a session source), a discovery failure counts once per
session Postfix reports for the domain, not once per lookup (issue 11 item 13).

The daemon runs in-process (its real listeners, collector thread and store) against the
loopback DNS/HTTPS servers; the store is read back after a clean stop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import StsWorld
from mta_sts_policyd.config.settings import config_from_mapping
from mta_sts_policyd.errors import ConfigError, ResultType
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.postfix.client import SocketmapClient
from mta_sts_policyd.service.daemon import Daemon
from mta_sts_policyd.service.reporting import enforce_policy_at, failure_event, policy_ref
from mta_sts_policyd.sts.model import Mode, Policy
from mta_sts_policyd.tlsrpt.model import PolicyType
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support import TESTS_DIR
from support.ports import free_port

DATAGRAM = TESTS_DIR / "fixtures" / "datagrams" / "libtlsrpt-sts-success.json"
NO_POLICY_DATAGRAM = (
    (TESTS_DIR / "fixtures" / "datagrams" / "libtlsrpt-no-policy-found.json")
    .read_bytes()
    .replace(b"Other.Example.", b"broken.test.")
    .replace(b"tls@other.example", b"tls@broken.test")
)
ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
POLICY = Policy(Mode.ENFORCE, 86400, ("mail.example.test",), ("version: STSv1", "mode: enforce"))


def ask(address: str, key: str, times: int) -> list[bytes]:
    with SocketmapClient(address) as client:
        return [client.query(key) for _ in range(times)]


def tlsrpt_config(world: StsWorld, state: Path) -> dict[str, object]:
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
        "tlsrpt": {
            "enabled": True,
            "socket": str(state / "tlsrpt.sock"),
            "organization_name": "Example Sender",
            "contact_info": "tlsrpt@sender.test",
            "envelope_sender": "tlsrpt@sender.test",
            "allow_unsigned": True,
        },
    }


def test_policy_ref_and_failure_event_always_name_the_policy_domain() -> None:
    entry = CacheEntry("example.test", policy=POLICY, expires_at=2e9, fetched_at=1e9)
    ref = policy_ref(entry)
    assert ref.policy_type is PolicyType.STS and ref.mx_hosts == ("mail.example.test",)
    bare = CacheEntry("nopolicy.test")
    event = failure_event(bare, ResultType.STS_WEBPKI_INVALID, "x" * 400, 1e9)
    # docs/conformance.md: RPT-4.4-policy-domain-always
    assert event.policy.policy_type is PolicyType.STS
    assert event.policy.policy_domain == "nopolicy.test" and not event.success
    reason = event.failures[0].failure_reason_code
    assert reason is not None and len(reason) == 255  # RFC 8460 §7: bounded free text


def test_enforce_policy_at_only_inside_the_policy_lifetime() -> None:
    class Resolver:
        class cache:
            @staticmethod
            def get(domain: str) -> CacheEntry | None:
                return entry if domain == "example.test" else None

    entry = CacheEntry("example.test", policy=POLICY, fetched_at=100.0, expires_at=200.0)
    policy_at = enforce_policy_at(Resolver())  # type: ignore[arg-type]
    assert policy_at("example.test", 150.0) is not None
    assert policy_at("example.test", 250.0) is None
    assert policy_at("other.test", 150.0) is None
    entry.policy = dataclasses.replace(POLICY, mode=Mode.TESTING)
    assert policy_at("example.test", 150.0) is None  # testing: judged in shadow, not here


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"contact_info": ""}, "tlsrpt.contact_info"),
        ({"envelope_sender": ""}, "tlsrpt.envelope_sender"),
        ({"allow_unsigned": False}, "tlsrpt.dkim"),
    ],
)
def test_tlsrpt_config_says_what_is_missing(
    sts_world: StsWorld, tmp_path: Path, change: dict[str, object], key: str
) -> None:
    raw = tlsrpt_config(sts_world, tmp_path)
    raw["tlsrpt"] = {**raw["tlsrpt"], **change}  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_mapping(raw)


async def test_datagrams_and_discovery_failures_reach_the_store(
    sts_world: StsWorld, tmp_path: Path
) -> None:
    config = config_from_mapping(tlsrpt_config(sts_world, tmp_path))
    sts_world.publish("broken.test", ENFORCE, status=500)
    daemon = Daemon(config)
    await daemon.start()
    try:
        host, port = daemon.bound[0]
        replies = await asyncio.to_thread(ask, f"{host}:{port}", "broken.test", 3)
        assert replies == [b"NOTFOUND "] * 3  # three lookups while the fetch failure lasts
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(DATAGRAM.read_bytes(), str(tmp_path / "tlsrpt.sock"))
        # Postfix's one session to broken.test: no-policy-found, as the daemon answered NOTFOUND
        # (the real libtlsrpt capture, its domain and record changed to broken.test)
        sender.sendto(NO_POLICY_DATAGRAM, str(tmp_path / "tlsrpt.sock"))
        sender.close()
        await asyncio.sleep(0.3)  # the collector's receive and parse threads
    finally:
        await daemon.stop()
    day = datetime.now(UTC).date()
    with TlsRptStore(tmp_path / "tlsrpt.sqlite") as store:
        days = store.domain_days(day)
    by_domain = {d.report_domain: d for d in days}
    (broken,) = by_domain["broken.test"].policies
    # issue 11 item 13: counted once for the one session, not once per lookup (3)
    assert (broken.successes, broken.failures) == (0, 1)
    assert broken.details[0][0].result_type is ResultType.STS_POLICY_FETCH_ERROR
    assert sum(p.successes for d in days for p in d.policies) == 1  # the libtlsrpt datagram
