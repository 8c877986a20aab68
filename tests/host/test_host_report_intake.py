"""TLS reports POSTed to the running policy host (RFC 8460 §5.4) over real TLS on loopback.

The intake is the one composition.py builds from a config; the store and quarantine are the
real ones in the state directory.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import shutil
import sqlite3
import ssl
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import httpx
import pytest
import trustme

from mta_sts_policyd.config.settings import Config, config_from_mapping
from mta_sts_policyd.errors import ConfigError
from mta_sts_policyd.host.certificates import CHAIN_FILE, KEY_FILE
from mta_sts_policyd.host.documents import POLICY_FILE
from mta_sts_policyd.host.run import PolicyHost
from mta_sts_policyd.reports_in.store import ReportsInStore
from mta_sts_policyd.service.composition import open_reports_in_store
from mta_sts_policyd.service.host_parts import host_settings, make_host_intake
from mta_sts_policyd.state_files import REPORTS_IN_QUARANTINE, REPORTS_IN_STORE_NAME
from support.certs import CertFactory
from support.ports import free_port
from support.received_reports import report

POLICY = b"version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 86400\n"
NAME = "mta-sts.example.com"
DAY = date(2026, 11, 30)


class Reports:
    def __init__(self, root: Path, ca: trustme.CA, max_bytes: int = 4096) -> None:
        self.root = root
        self.port = free_port()
        self.ca_path = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        policy = root / "policies" / "example.com" / POLICY_FILE
        policy.parent.mkdir(parents=True)
        policy.write_bytes(POLICY)
        folder = root / "certs" / NAME
        folder.mkdir(parents=True)
        factory = CertFactory(ca, root)
        (folder / CHAIN_FILE).write_bytes(factory.chain_pem("valid", [NAME]))
        shutil.copy(root / "leaf.key", folder / KEY_FILE)
        self.config = self.make_config(reports_max_bytes=max_bytes)

    def make_config(self, **host: object) -> Config:
        return config_from_mapping(
            {
                "cache": {"state_dir": str(self.root / "state")},
                "reports_in": {"domains": ["example.com"], "spool_dir": ""},
                "host": {
                    "listen": [f"127.0.0.1:{self.port}"],
                    "policy_dir": str(self.root / "policies"),
                    "cert_dirs": [str(self.root / "certs")],
                    "reports_path": "/tlsrpt",
                    "reports_max_bytes": 4096,
                    **host,
                },
            }
        )

    async def post(
        self, body: bytes, content_type: str = "application/tlsrpt+gzip", path: str = "/tlsrpt"
    ) -> httpx.Response:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        async with httpx.AsyncClient(verify=context) as client:
            return await client.post(
                f"https://127.0.0.1:{self.port}{path}",
                content=body,
                headers={"Host": NAME, "Content-Type": content_type},
                extensions={"sni_hostname": NAME},
            )

    def store(self) -> ReportsInStore:
        return open_reports_in_store(self.config)

    def quarantined(self) -> list[str]:
        folder = self.config.state_dir / REPORTS_IN_QUARANTINE
        return sorted(p.read_text() for p in folder.glob("*.reason"))


@pytest.fixture
async def world(tmp_path: Path, trust_ca: trustme.CA) -> AsyncIterator[Reports]:
    w = Reports(tmp_path, trust_ca)
    host = PolicyHost(host_settings(w.config), intake=make_host_intake(w.config))
    task = asyncio.create_task(host.serve())
    for _ in range(100):
        try:
            await asyncio.open_connection("127.0.0.1", w.port)
            break
        except OSError:
            await asyncio.sleep(0.02)
    yield w
    host.stop()
    await task


def gz(doc: object) -> bytes:
    return gzip.compress(json.dumps(doc).encode())


def sessions(store: ReportsInStore) -> int:
    days = store.policy_days("example.com", date(2000, 1, 1))
    return sum(day.successes + day.failures for day in days)


async def test_a_gzip_report_is_stored_before_the_2xx_and_a_duplicate_counts_once(
    world: Reports,
) -> None:
    doc = report("Sender A", DAY, ok=40, failed=2)
    first = await world.post(gz(doc))
    assert first.status_code == 201, first.text
    assert sessions(world.store()) == 42  # in the store when the answer came
    again = await world.post(gz(doc))
    assert (again.status_code, again.text.strip()) == (200, "already stored")
    assert sessions(world.store()) == 42
    assert world.quarantined() == []


async def test_a_json_report_is_stored_too(world: Reports) -> None:
    body = json.dumps(report("Sender B", DAY, ok=7)).encode()
    answer = await world.post(body, "application/tlsrpt+json; charset=utf-8")
    assert answer.status_code == 201
    assert sessions(world.store()) == 7


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"\x1f\x8b" + bytes(5000), "application/tlsrpt+gzip", 413, "larger than 4096"),
        (b"not gzip at all", "application/tlsrpt+gzip", 400, "not valid gzip"),
        (b"{not json", "application/tlsrpt+json", 400, "not JSON"),
        (b'{"a": 1}', "text/plain", 415, "is not a TLS report"),
        (gz(report("Sender C", DAY) | {"policies": []}), None, 400, "policies: 1 to"),
    ],
)
async def test_oversize_garbage_and_wrong_types_get_4xx_and_are_quarantined(
    world: Reports, body: bytes, content_type: str | None, status: int, reason: str
) -> None:
    answer = await world.post(body, content_type or "application/tlsrpt+gzip")
    assert answer.status_code == status, answer.text
    assert reason in answer.text
    assert len(world.quarantined()) == 1 and reason in world.quarantined()[0]
    assert sessions(world.store()) == 0


async def test_a_report_about_someone_elses_domain_is_refused(world: Reports) -> None:
    doc = report("Sender D", DAY)
    doc["policies"][0]["policy"]["policy-domain"] = "other.example"
    answer = await world.post(gz(doc))
    assert answer.status_code == 400 and "not an own domain" in answer.text
    assert len(world.quarantined()) == 1


async def test_a_store_that_cannot_write_answers_503_and_the_sender_retries(
    world: Reports, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    path = world.config.state_dir / REPORTS_IN_STORE_NAME
    with sqlite3.connect(path) as db:  # the store breaks under the running host
        db.execute("DROP TABLE reports")
    answer = await world.post(gz(report("Sender E", DAY)))
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert "event=report-store-failed" in caplog.text
    assert world.quarantined() == []  # not the sender's fault: nothing quarantined
    world.store().close()  # opening it again repairs the schema
    retried = await world.post(gz(report("Sender E", DAY)))
    assert retried.status_code == 201


async def test_only_the_configured_path_takes_reports(world: Reports) -> None:
    answer = await world.post(gz(report("Sender F", DAY)), path="/.well-known/mta-sts.txt")
    assert answer.status_code == 404
    assert sessions(world.store()) == 0


def test_the_intake_is_off_without_a_path_and_the_policy_path_is_refused(
    tmp_path: Path, trust_ca: trustme.CA
) -> None:
    w = Reports(tmp_path, trust_ca)
    assert make_host_intake(w.make_config(reports_path="")) is None
    with pytest.raises(ConfigError, match=r"host\.reports_path"):
        host_settings(w.make_config(reports_path="/.well-known/mta-sts.txt"))
    with pytest.raises(ConfigError, match=r"host\.reports_path"):
        host_settings(w.make_config(reports_path="tlsrpt"))
