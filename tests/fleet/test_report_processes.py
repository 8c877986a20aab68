"""Real daemons: three `mta-sts-policyd serve` processes in fleet mode, each with yesterday's
sessions in its own TLS-RPT store, send one report per domain for the fleet (issue 16 item 6),
with the sum of their counts, through a loopback SMTP relay."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme

from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.report_snapshot import encode_snapshot
from mta_sts_policyd.state_files import TLSRPT_STORE_NAME
from mta_sts_policyd.tlsrpt.model import SessionEvent
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from support.daemon_process import wait_until
from support.fleet_world import FleetWorld
from support.tlsrpt_receivers import SmtpReceiver
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


@pytest.mark.slow
def test_three_daemons_send_one_report_per_domain_with_the_sum(
    tmp_path: Path, trust_ca: trustme.CA
) -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime.combine(yesterday, datetime.min.time(), UTC).timestamp() + 12 * 3600
    with SmtpReceiver() as smtp:
        settings = {
            "tlsrpt": {
                "enabled": True,
                "socket": "",
                "organization_name": "Fleet Org",
                "contact_info": "tlsrpt@sender.test",
                "envelope_sender": "tlsrpt@sender.test",
                "smtp_relay": f"127.0.0.1:{smtp.port}",
                "allow_unsigned": True,
                "send_delay_max": 0.0,  # at any hour of the day the reports go out at once
            }
        }
        # yesterday ended hours ago: a deadline of a day keeps it open for the test
        fleet = {"report_settle": 0.0, "report_deadline": 86400.0, "snapshot_interval": 1.0}
        with FleetWorld(tmp_path, trust_ca, 3, fleet=fleet, settings=settings) as world:
            keys = FleetKeys(PREFIX)
            r = redis.Redis.from_url(world.redis.url)
            for n, daemon in enumerate(world.daemons):
                daemon.state_dir.mkdir(parents=True, exist_ok=True)
                with TlsRptStore(daemon.state_dir / TLSRPT_STORE_NAME) as store:
                    for domain in DOMAINS:
                        record = f"v=TLSRPTv1;rua=mailto:tlsrpt@{domain}"
                        store.submit(SessionEvent(noon, domain, STS, True, (), record, 10 + n))
                # What each node uploaded during the day: the fleet waits for its final counts.
                day_time = encode_snapshot(f"node{n}", yesterday, final=False, domain_days=[])
                r.hset(keys.snapshot(yesterday.isoformat()), f"node{n}", day_time)
                r.hset(keys.snapshot_status(yesterday.isoformat()), f"node{n}", "open")
            world.start()
            assert wait_until(lambda: len(smtp.sink.messages) >= len(DOMAINS), 30), world.logs()
            time.sleep(3)  # every node has had more passes: still one report each
            got = _received(smtp)
            r.close()
    assert Counter(rcpt for rcpt, _ in got) == {f"tlsrpt@{d}": 1 for d in DOMAINS}
    for _, report in got:
        validate_report(json.dumps(report).encode())
        (policy,) = report["policies"]
        assert policy["summary"]["total-successful-session-count"] == 10 + 11 + 12
