"""Real daemons: `mta-sts-policyd serve` processes in fleet mode, each with yesterday's sessions
in its own TLS-RPT store, send one report per domain for the fleet (issue 16 item 6), with the
sum of their counts, through a loopback SMTP relay; killed (-9) right after the relay took a
report, they send it once more after restarting: the same bytes, counted."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from dkim import verify as dkim_verify

from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.report_snapshot import encode_snapshot
from mta_sts_policyd.state_files import TLSRPT_STORE_NAME
from mta_sts_policyd.tlsrpt.model import SessionEvent
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support.daemon_process import wait_until
from support.fleet_world import FleetWorld
from support.tlsrpt_receivers import SmtpReceiver, SmtpSink, make_dkim_key
from support.tlsrpt_validate import STS, validate_report

DOMAINS = ("one.example", "two.example")
PREFIX = "fleet-test"


def _received(smtp: SmtpReceiver) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, rcpts, raw in smtp.sink.messages:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        (part,) = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        out.append((rcpts[0], json.loads(gzip.decompress(part.get_payload(decode=True)))))
    return out


def _settings(smtp_port: int, dkim: dict[str, str] | None = None) -> dict[str, Any]:
    tables: dict[str, Any] = {
        "tlsrpt": {
            "enabled": True,
            "socket": "",
            "organization_name": "Fleet Org",
            "contact_info": "tlsrpt@sender.test",
            "envelope_sender": "tlsrpt@sender.test",
            "smtp_relay": f"127.0.0.1:{smtp_port}",
            "allow_unsigned": dkim is None,
            "send_delay_max": 0.0,  # at any hour of the day the reports go out at once
        }
    }
    if dkim is not None:
        tables["tlsrpt.dkim"] = dkim
    return tables


# yesterday ended hours ago: a deadline of a day keeps it open for the test
FLEET = {"report_settle": 0.0, "report_deadline": 86400.0, "snapshot_interval": 1.0}


def _seed(world: FleetWorld, domains: tuple[str, ...]) -> None:
    """Yesterday's sessions in each node's store, and the open snapshot each node uploaded
    during the day (the fleet waits for every node's final counts)."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime.combine(yesterday, datetime.min.time(), UTC).timestamp() + 12 * 3600
    keys = FleetKeys(PREFIX)
    r = redis.Redis.from_url(world.redis.url)
    for n, daemon in enumerate(world.daemons):
        daemon.state_dir.mkdir(parents=True, exist_ok=True)
        with TlsRptStore(daemon.state_dir / TLSRPT_STORE_NAME) as store:
            for domain in domains:
                record = f"v=TLSRPTv1;rua=mailto:tlsrpt@{domain}"
                store.submit(SessionEvent(noon, domain, STS, True, (), record, 10 + n))
        day_time = encode_snapshot(f"node{n}", yesterday, final=False, domain_days=[])
        r.hset(keys.snapshot(yesterday.isoformat()), f"node{n}", day_time)
        r.hset(keys.snapshot_status(yesterday.isoformat()), f"node{n}", "open")
    r.close()


@pytest.mark.slow
def test_three_daemons_send_one_report_per_domain_with_the_sum(
    tmp_path: Path, trust_ca: trustme.CA
) -> None:
    with (
        SmtpReceiver() as smtp,
        FleetWorld(tmp_path, trust_ca, 3, fleet=FLEET, settings=_settings(smtp.port)) as world,
    ):
        _seed(world, DOMAINS)
        world.start()
        assert wait_until(lambda: len(smtp.sink.messages) >= len(DOMAINS), 30), world.logs()
        time.sleep(3)  # every node has had more passes: still one report each
        got = _received(smtp)
    assert Counter(rcpt for rcpt, _ in got) == {f"tlsrpt@{d}": 1 for d in DOMAINS}
    for _, report in got:
        validate_report(json.dumps(report).encode())
        (policy,) = report["policies"]
        assert policy["summary"]["total-successful-session-count"] == 10 + 11 + 12


@dataclass
class KillingSink(SmtpSink):
    """Takes the first report, then kills every daemon before it hears the 250."""

    on_first: Callable[[], None] = lambda: None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if len(self.messages) == 1:
            self.on_first()
        return reply


@pytest.mark.slow
def test_daemons_killed_between_sending_and_recording_resend_the_same_bytes_once(
    tmp_path: Path, trust_ca: trustme.CA
) -> None:
    key = make_dkim_key()
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(key.pem)
    dkim = {"domain": "sender.test", "selector": "rpt", "key_file": str(pem)}
    receiver = SmtpReceiver()
    sink = KillingSink()
    receiver.sink = sink
    receiver.controller.handler = sink
    with receiver as smtp:
        settings = _settings(smtp.port, dkim)
        fleet = {**FLEET, "report_lease": 2.0}
        with FleetWorld(tmp_path, trust_ca, 2, fleet=fleet, settings=settings) as world:
            _seed(world, DOMAINS[:1])
            sink.on_first = lambda: [d.proc.kill() for d in world.daemons if d.proc]
            world.start()
            assert wait_until(lambda: len(smtp.sink.messages) == 1, 30), world.logs()
            for daemon in world.daemons:
                daemon.stop(signal.SIGKILL)  # reap the killed process
            world.start()  # both back; the report's lease expires, one takes it over
            assert wait_until(lambda: len(smtp.sink.messages) == 2, 30), world.logs()
            time.sleep(3)
            duplicates = sum(world.metric(i, "fleet_possible_duplicates_total") for i in range(2))
            sent = sum(world.metric(i, "fleet_reports_sent_total") for i in range(2))
            first, again = (m[2] for m in smtp.sink.messages)
    assert first == again  # the same bytes: Date, Message-ID, DKIM-Signature and all
    assert dkim_verify(first, dnsfunc=key.dnsfunc("rpt", "sender.test"), tlsrpt=True)
    assert duplicates == 1 and sent == 1  # the re-send, counted (the first node died unrecorded)
