"""Daily sender: timing, retries, restart safety, catch-up (RFC 8460 §3, §4.1, §5.5;
docs/conformance.md: RPT-durable-days)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
import trustme

from mta_sts_policyd import metrics
from mta_sts_policyd.tlsrpt.deliver import DeliveryError, DeliverySettings, NetworkTransport
from mta_sts_policyd.tlsrpt.message import DkimSettings
from mta_sts_policyd.tlsrpt.model import SessionEvent
from mta_sts_policyd.tlsrpt.record import RuaDestination
from mta_sts_policyd.tlsrpt.report import ReportDocument, ReportSettings
from mta_sts_policyd.tlsrpt.sender import ReportSender
from mta_sts_policyd.tlsrpt.store.aggregates import TlsRptStore
from mta_sts_policyd.tlsrpt.store.ledger import DestState, JobBook, JobState
from support.tlsrpt_receivers import HttpsReceiver, SmtpReceiver
from support.tlsrpt_validate import DAY_TS, STS

DAY = date(2026, 11, 21)
MIDNIGHT = DAY_TS + 86400  # end of DAY
REPORT = ReportSettings("Org", "tlsrpt@sender.example")
TWO = "v=TLSRPTv1;rua=https://r.company-y.example/x,mailto:a@company-y.example"


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class RecordingTransport:
    """Injected Transport: records calls; `fail` maps destination -> temporary flag."""

    fail: dict[str, bool] = field(default_factory=dict)
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    clock: Clock | None = None

    async def deliver(self, doc: ReportDocument, dest: RuaDestination) -> None:
        self.calls.append((self.clock() if self.clock else 0.0, str(dest), doc.report_id))
        if str(dest) in self.fail:
            raise DeliveryError("refused", temporary=self.fail[str(dest)])


def _settings(**kw: object) -> DeliverySettings:
    return DeliverySettings(envelope_sender="b@sender.example", **kw)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TlsRptStore]:
    with TlsRptStore(tmp_path / "s.db", flush_interval=3600) as s:
        yield s


def _feed(store: TlsRptStore, record: str | None = TWO, days: int = 1) -> None:
    for d in range(days):
        store.submit(
            SessionEvent(
                DAY_TS + 60 - d * 86400, "company-y.example", STS, True, tlsrpt_record=record
            )
        )
    store.flush()


def _sender(
    store: TlsRptStore, clock: Clock, transport: RecordingTransport, **kw: object
) -> ReportSender:
    transport.clock = clock
    return ReportSender(
        store, REPORT, _settings(**kw), transport, clock=clock, rng=random.Random(7)
    )


async def test_nothing_before_midnight_plus_delay_then_sent(store: TlsRptStore) -> None:
    """RFC 8460 §4.1: not before the day is over; random delay within send_delay_max."""
    _feed(store)
    clock, transport = Clock(MIDNIGHT - 60), RecordingTransport()
    sender = _sender(store, clock, transport)
    assert await sender.tick() is None and transport.calls == []  # day not finished
    clock.now = MIDNIGHT + 1
    due = await sender.tick()
    assert due is not None and MIDNIGHT <= due <= MIDNIGHT + 4 * 3600
    assert transport.calls == []
    clock.now = due
    await sender.tick()
    assert [c[1] for c in transport.calls] == ["https://r.company-y.example/x"]
    (job,) = JobBook(store).jobs(DAY)
    assert job.state == JobState.DELIVERED and job.report_id == transport.calls[0][2]


async def test_one_accepting_destination_is_enough(store: TlsRptStore) -> None:
    """RFC 8460 §3: https fails, mailto accepts → delivered, no further retries."""
    _feed(store)
    clock = Clock(MIDNIGHT + 5 * 3600)
    transport = RecordingTransport(fail={"https://r.company-y.example/x": True})
    sender = _sender(store, clock, transport)
    await sender.tick()
    assert [c[1] for c in transport.calls] == [
        "https://r.company-y.example/x",
        "mailto:a@company-y.example",
    ]
    (job,) = JobBook(store).jobs(DAY)
    assert job.state == JobState.DELIVERED
    clock.now += 86400
    await sender.tick()
    assert len(transport.calls) == 2


async def test_retries_back_off_exponentially_and_stop_after_24h(store: TlsRptStore) -> None:
    """RFC 8460 §5.5: increasing gaps, nothing after first attempt + 24 h, then FAILED."""
    _feed(store)
    clock = Clock(MIDNIGHT + 5 * 3600)
    transport = RecordingTransport(
        fail={"https://r.company-y.example/x": True, "mailto:a@company-y.example": True}
    )
    sender = _sender(store, clock, transport)
    for _ in range(100):
        nxt = await sender.tick()
        if nxt is None:
            break
        clock.now = max(nxt, clock.now)
    attempts = sorted({c[0] for c in transport.calls})
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert 300 <= gaps[0] <= 330 and gaps[:5] == sorted(gaps[:5])  # 5, 10, 20, 40, 80 min
    assert max(gaps) <= 4 * 3600 * 1.1
    assert attempts[-1] - attempts[0] <= 24 * 3600
    assert attempts[-1] - attempts[0] >= 20 * 3600
    (job,) = JobBook(store).jobs(DAY)
    assert job.state == JobState.FAILED
    assert {d.state for d in JobBook(store).destinations(job)} == {DestState.FAILED}


async def test_permanent_failures_end_without_retry(store: TlsRptStore) -> None:
    _feed(store)
    transport = RecordingTransport(
        fail={"https://r.company-y.example/x": False, "mailto:a@company-y.example": False}
    )
    sender = _sender(store, Clock(MIDNIGHT + 5 * 3600), transport)
    assert await sender.tick() is None
    assert len(transport.calls) == 2
    assert JobBook(store).jobs(DAY)[0].state == JobState.FAILED


async def test_restart_after_accepted_send_does_not_duplicate(tmp_path: Path) -> None:
    """Crash after the receiver accepted but before the job was closed: no second send."""
    path = tmp_path / "r.db"
    clock, transport = Clock(MIDNIGHT + 5 * 3600), RecordingTransport()
    with TlsRptStore(path) as store:
        _feed(store)
        sender = _sender(store, clock, transport)

        def crash(*_a: object, **_k: object) -> None:
            raise RuntimeError("power cut")

        sender.book.finish = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await sender.tick()
    assert len(transport.calls) == 1
    with TlsRptStore(path) as store:  # restart
        sender = _sender(store, clock, transport)
        await sender.tick()
        assert len(transport.calls) == 1
        assert JobBook(store).jobs(DAY)[0].state == JobState.DELIVERED


async def test_restart_keeps_the_random_send_time(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with TlsRptStore(path) as store:
        _feed(store)
        due = await _sender(store, Clock(MIDNIGHT + 1), RecordingTransport()).tick()
    with TlsRptStore(path) as store:
        sender = ReportSender(
            store,
            REPORT,
            _settings(),
            RecordingTransport(),
            clock=Clock(MIDNIGHT + 2),
            rng=random.Random(99),
        )
        assert await sender.tick() == due


async def test_missed_days_are_caught_up_within_bound(store: TlsRptStore) -> None:
    """RPT-durable-days: a daemon down for days sends every missed day; older than the bound
    expire."""
    _feed(store, days=10)
    clock, transport = Clock(MIDNIGHT + 3600 * 5), RecordingTransport()
    sender = _sender(store, clock, transport, send_delay_max=0.0, catch_up_days=7)
    await sender.tick()
    states = {j.day: j.state for j in JobBook(store).jobs()}
    assert len(states) == 10
    assert sum(s == JobState.DELIVERED for s in states.values()) == 7
    assert {d for d, s in states.items() if s == JobState.EXPIRED} == {
        DAY - timedelta(days=n) for n in (7, 8, 9)
    }
    assert len({c[2] for c in transport.calls}) == 7


async def test_record_looked_up_when_producer_gave_none(store: TlsRptStore) -> None:
    """RFC 8460 §3 at send time: no `pr` → `_smtp._tls` lookup; no record → no-destination."""
    _feed(store, record=None)
    store.submit(SessionEvent(DAY_TS, "none.example", STS, True))
    store.flush()
    names: list[str] = []

    async def lookup(name: str) -> list[list[bytes]]:
        names.append(name)
        return [[b"v=TLSRPTv1;rua=mailto:x@company-y.example"]] if "company" in name else []

    transport = RecordingTransport()
    sender = ReportSender(
        store,
        REPORT,
        _settings(),
        transport,
        txt_lookup=lookup,
        clock=Clock(MIDNIGHT + 5 * 3600),
        rng=random.Random(1),
    )
    await sender.tick()
    assert sorted(names) == ["_smtp._tls.company-y.example", "_smtp._tls.none.example"]
    assert [c[1] for c in transport.calls] == ["mailto:x@company-y.example"]
    states = {j.report_domain: j.state for j in JobBook(store).jobs()}
    assert states == {
        "company-y.example": JobState.DELIVERED,
        "none.example": JobState.NO_DESTINATION,
    }


async def test_end_to_end_https_500_then_mail_accepted(store: TlsRptStore, tmp_path: Path) -> None:
    """RFC 8460 §3 with real receivers: HTTPS 500 does not count, the aiosmtpd relay does."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with SmtpReceiver() as smtp, HttpsReceiver(ca) as https:
        https.mode = "500"
        record = f"v=TLSRPTv1;rua={https.url()},mailto:a@company-y.example"
        _feed(store, record=record)
        settings = DeliverySettings(
            envelope_sender="b@sender.example",
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            https_ca_file=str(ca_file),
            allow_private_destinations=True,
            send_delay_max=0,
        )
        transport = NetworkTransport(settings, DkimSettings(allow_unsigned=True))
        sender = ReportSender(
            store, REPORT, settings, transport, clock=Clock(MIDNIGHT + 10), rng=random.Random(3)
        )
        before = _report_counts()
        await sender.tick()
        assert len(https.posts) == 1 and len(smtp.sink.messages) == 1
    after = _report_counts()  # issue 5 §9: reports sent / failed by transport
    assert after["failed-https"] - before["failed-https"] == 1
    assert after["sent-mail"] - before["sent-mail"] == 1
    assert after["sent-https"] == before["sent-https"]
    (job,) = JobBook(store).jobs(DAY)
    assert job.state == JobState.DELIVERED
    dests = {d.destination: d.state for d in JobBook(store).destinations(job)}
    assert dests[https.url()] == DestState.FAILED
    assert dests["mailto:a@company-y.example"] == DestState.SENT


def _report_counts() -> dict[str, float]:
    return {
        f"{kind}-{transport}": family.labels(transport).read()
        for kind, family in (("sent", metrics.REPORTS_SENT), ("failed", metrics.REPORTS_FAILED))
        for transport in ("mail", "https")
    }
