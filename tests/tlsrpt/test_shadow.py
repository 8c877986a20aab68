"""Testing-mode domains checked in shadow (issue 6 §3; RFC 8461 §4-§5, RFC 8460 §4.3-4.4;
docs/conformance.md: STS-5-testing-report).

Real things on loopback: one SMTP server with STARTTLS picks its certificate by SNI (valid for
MX1, wrong name for MX2, RFC 8461 §3.3), the loopback DNS server answers the MX lookups through the
daemon's own Discovery, and events come from the real libtlsrpt datagram parser.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from mta_sts_policyd import metrics
from mta_sts_policyd.discovery.client import Discovery
from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.probe.prober import MxProber
from mta_sts_policyd.sts.model import Mode, Policy
from mta_sts_policyd.tlsrpt.libtlsrpt.datagram import parse_datagram
from mta_sts_policyd.tlsrpt.model import FailureDetail, PolicyRef, PolicyType, SessionEvent
from mta_sts_policyd.tlsrpt.shadow.checker import TestingShadow
from mta_sts_policyd.tlsrpt.shadow.sink import RelabelingSink
from support.certs import CertFactory
from support.dns_server import DnsServer
from support.smtp_server import LoopbackSmtpServer, SmtpBehaviour

DOMAIN = "testing.example.test"
MX1 = "mx1.testing.example.test"  # valid certificate
MX2 = "mx2.testing.example.test"  # certificate for testing.example.test only (RFC 8461 §3.3)
DOWN = "down.testing.example.test"  # no address: the probe cannot reach it (transient)
START = dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.UTC).timestamp()
HOUR = 3600.0
RECHECK = 6 * HOUR
RETRY = 300.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ListSink:
    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def submit(self, event: SessionEvent) -> None:
        self.events.append(event)


@dataclass
class World:
    shadow: TestingShadow
    smtp: LoopbackSmtpServer
    dns: DnsServer
    clock: Clock


def policy(mode: Mode = Mode.TESTING, mx: tuple[str, ...] = ("*.testing.example.test",)) -> Policy:
    lines = ("version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), "max_age: 604800")
    return Policy(mode=mode, max_age=604800, mx=mx, lines=lines)


def entry(
    domain: str = DOMAIN, pol: Policy | None = None, expires: float = START + 7 * 86400
) -> CacheEntry:
    return CacheEntry(domain=domain, policy=pol or policy(), expires_at=expires)


def datagram_event(
    domain: str = DOMAIN, *details: dict[str, object], at: float = START
) -> SessionEvent:
    """What the collector makes of Postfix's datagram for a domain we answered NOTFOUND."""
    pol: dict[str, object] = {"policy-type": 9, "f": 1 if details else 0, "t": len(details)}
    if details:
        pol["failure-details"] = list(details)
    (event,) = parse_datagram(json.dumps({"dpv": "1", "d": domain, "policies": [pol]}).encode(), at)
    return event


def sts_failure(
    mx: str, result: ResultType, at: float = START, code: str = "handshake-failure"
) -> SessionEvent:
    """A mail-log session of an enforce domain (maillog.py output shape)."""
    ref = PolicyRef(
        PolicyType.STS,
        "enforce.example.test",
        policy(Mode.ENFORCE).lines,
        ("*.testing.example.test",),
    )
    detail = FailureDetail(
        result, receiving_mx_hostname=mx, receiving_ip="127.0.0.1", failure_reason_code=code
    )
    return SessionEvent(at, "enforce.example.test", ref, False, (detail,))


async def loopback(host: str) -> list[str]:
    return [] if host == DOWN else ["127.0.0.1"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def world(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[World]:
    certs = CertFactory(ca, tmp_path)
    by_name = {
        MX1: certs.context("valid", (MX1,)),
        MX2: certs.context("wrong-name", certs.names_for("wrong-name", MX2)),
    }
    base = certs.new_context()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    clock = Clock(START)
    with DnsServer() as dns:
        dns.set_mx(DOMAIN, (10, MX1), (20, MX2))
        async with LoopbackSmtpServer(SmtpBehaviour(tls=base, helo_name="mx.test")) as smtp:

            def pick(obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                smtp.record.sni.append(name)
                if name in by_name:
                    obj.context = by_name[name]

            base.sni_callback = pick
            prober = MxProber(
                ca_file=str(ca_file), timeout=2.0, port=smtp.port, resolve=loopback,
                ehlo_name="client.example.test", clock=clock, reprobe_interval=RECHECK,
            )  # fmt: skip
            discovery = Discovery(nameservers=[dns.nameserver], dns_timeout=1.0)
            shadow = TestingShadow(
                prober, discovery.lookup_mx, clock=clock, recheck_interval=RECHECK,
                retry_interval=RETRY,
            )  # fmt: skip
            yield World(shadow, smtp, dns, clock)
            await shadow.aclose()
            await prober.aclose()
            await discovery.aclose()


async def probed(w: World, *entries: CacheEntry) -> None:
    for e in entries:
        w.shadow.on_policy(e)
    await w.shadow.join()


# --- scheduling on the answer path ---------------------------------------------------------------


async def test_testing_domain_gets_exactly_one_probe_round(world: World) -> None:
    e = entry()
    for _ in range(3):
        world.shadow.on_policy(e)
    await world.shadow.join()
    for _ in range(3):
        world.shadow.on_policy(e)
    await world.shadow.join()
    assert world.shadow.stats.rounds == 1
    assert sorted(n for n in world.smtp.record.sni if n) == [MX1, MX2]
    verdicts = world.shadow.verdicts(DOMAIN)
    assert verdicts[MX1].ok, verdicts[MX1].reason
    assert verdicts[MX2].result_type is ResultType.CERTIFICATE_HOST_MISMATCH


async def test_answer_path_second_call_creates_no_task(world: World) -> None:
    """On the answer path a known testing domain costs a dict lookup: no task, no clock-due work."""
    e = entry()
    world.shadow.on_policy(e)
    assert world.shadow.pending == 1
    tasks = len(asyncio.all_tasks())
    world.shadow.on_policy(e)  # round still running
    assert len(asyncio.all_tasks()) == tasks and world.shadow.pending == 1
    await world.shadow.join()
    tasks = len(asyncio.all_tasks())
    started = time.perf_counter()
    for _ in range(10_000):
        world.shadow.on_policy(e)
    elapsed = time.perf_counter() - started
    assert len(asyncio.all_tasks()) == tasks and world.shadow.pending == 0
    assert world.shadow.stats.rounds == 1
    assert elapsed < 0.5, f"10k on_policy calls took {elapsed:.3f}s"


async def test_recheck_interval_starts_a_new_round(world: World) -> None:
    e = entry()
    await probed(world, e)
    world.clock.now += RECHECK - 1
    await probed(world, e)
    assert world.shadow.stats.rounds == 1
    world.clock.now += 2
    await probed(world, e)
    assert world.shadow.stats.rounds == 2


async def test_enforce_and_none_domains_untouched(world: World) -> None:
    world.dns.set_mx("enforce.example.test", (10, MX2))
    world.dns.set_mx("none.example.test", (10, MX2))
    tasks = len(asyncio.all_tasks())
    world.shadow.on_policy(entry("enforce.example.test", policy(Mode.ENFORCE)))
    world.shadow.on_policy(entry("none.example.test", policy(Mode.NONE)))
    assert len(asyncio.all_tasks()) == tasks and world.shadow.pending == 0
    for domain in ("enforce.example.test", "none.example.test"):
        event = datagram_event(domain)
        assert world.shadow.relabel(event) is event
        assert world.shadow.testing_policy(domain, START) is None
    assert world.smtp.record.connections == 0


async def test_switch_from_testing_to_enforce_stops_relabeling(world: World) -> None:
    await probed(world, entry())
    assert world.shadow.relabel(datagram_event()).policy.policy_type is PolicyType.STS
    world.shadow.on_policy(entry(pol=policy(Mode.ENFORCE)))
    event = datagram_event()
    assert world.shadow.relabel(event) is event


async def test_policy_without_policy_never_raises(world: World) -> None:
    world.shadow.on_policy(CacheEntry(domain=DOMAIN))
    assert world.shadow.pending == 0


# --- relabeling (RFC 8460 §4.4 policy, §4.3 result types) ----------------------------------------


async def test_success_datagram_without_mx_takes_primary_mx_verdict(world: World) -> None:
    """Rule: the most preferred judged MX decides; MX1 (pref 10) passed -> sts success."""
    await probed(world, entry())
    event = world.shadow.relabel(datagram_event())
    pol = policy()
    assert event.policy == PolicyRef(PolicyType.STS, DOMAIN, pol.lines, pol.mx)
    assert event.success and event.failures == ()
    assert event.report_domain == DOMAIN and event.timestamp == START


async def test_success_datagram_with_failing_primary_is_sts_failure(world: World) -> None:
    world.dns.set_mx("bad-first.example.test", (5, MX2), (10, MX1))
    await probed(world, entry("bad-first.example.test"))
    event = world.shadow.relabel(datagram_event("bad-first.example.test"))
    assert event.policy.policy_type is PolicyType.STS and not event.success
    (detail,) = event.failures
    assert detail.result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    assert detail.receiving_mx_hostname == MX2 and detail.receiving_mx_helo == "mx.test"
    assert detail.failure_reason_code == "certificate-host-mismatch"


async def test_failure_naming_bad_mx_becomes_sts_host_mismatch(world: World) -> None:
    await probed(world, entry())
    raw = {"c": 205, "n": MX2, "s": "192.0.2.1", "r": "127.0.0.1", "f": "whatever"}
    event = world.shadow.relabel(datagram_event(DOMAIN, raw))
    assert event.policy.policy_type is PolicyType.STS and not event.success
    (detail,) = event.failures
    assert detail.result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    assert detail.receiving_mx_hostname == MX2
    assert detail.sending_mta_ip == "192.0.2.1"  # the session's own addresses are kept


async def test_failure_naming_good_mx_keeps_its_own_failure(world: World) -> None:
    """The MX passed the probe, but this session failed (e.g. no STARTTLS that time)."""
    await probed(world, entry())
    event = world.shadow.relabel(datagram_event(DOMAIN, {"c": 201, "n": MX1}))
    assert event.policy.policy_type is PolicyType.STS and not event.success
    assert [d.result_type for d in event.failures] == [ResultType.STARTTLS_NOT_SUPPORTED]


async def test_policy_patterns_apply_to_verdicts(world: World) -> None:
    """An MX no pattern covers fails whatever its certificate (RFC 8461 §4.1)."""
    await probed(world, entry(pol=policy(mx=(MX2,))))
    verdict = world.shadow.verdicts(DOMAIN)[MX1]
    assert verdict.result_type is ResultType.VALIDATION_FAILURE
    assert verdict.failure_reason_code == "mx-host-not-in-policy"
    event = world.shadow.relabel(datagram_event())
    assert not event.success and event.failures[0].receiving_mx_hostname == MX1


async def test_new_policy_reapplies_patterns_and_rechecks(world: World) -> None:
    await probed(world, entry())
    connections = world.smtp.record.connections
    await probed(world, entry(pol=policy(mx=(MX2,))))
    assert world.shadow.stats.rounds == 2
    assert world.smtp.record.connections == connections  # the prober's cache served the round
    assert world.shadow.verdicts(DOMAIN)[MX1].failure_reason_code == "mx-host-not-in-policy"


async def test_unknown_before_probe_leaves_event_unchanged(world: World) -> None:
    world.shadow.on_policy(entry())
    event = datagram_event()
    assert world.shadow.relabel(event) is event  # round still running: not yet probed
    await world.shadow.join()
    assert world.shadow.relabel(event) is not event


async def test_transient_mx_is_skipped_or_unknown(world: World) -> None:
    world.dns.set_mx("down-first.example.test", (5, DOWN), (10, MX1))
    world.dns.set_mx("down-only.example.test", (10, DOWN))
    await probed(world, entry("down-first.example.test"), entry("down-only.example.test"))
    # Unreachable primary: Postfix moved on to MX1, which passed.
    assert world.shadow.relabel(datagram_event("down-first.example.test")).success
    only = datagram_event("down-only.example.test")
    assert world.shadow.relabel(only) is only
    named = datagram_event("down-first.example.test", {"c": 205, "n": DOWN})
    assert world.shadow.relabel(named) is named


async def test_transient_round_retries_sooner(world: World) -> None:
    world.dns.set_mx("down-only.example.test", (10, DOWN))
    e = entry("down-only.example.test")
    await probed(world, e)
    world.clock.now += RETRY + 1
    await probed(world, e)
    assert world.shadow.stats.rounds == 2


async def test_mx_lookup_failure_is_retried(world: World) -> None:
    world.dns.fail("broken.example.test", "servfail", "MX")
    e = entry("broken.example.test")
    await probed(world, e)
    assert world.shadow.verdicts("broken.example.test") == {}
    event = datagram_event("broken.example.test")
    assert world.shadow.relabel(event) is event
    world.clock.now += RETRY + 1
    world.dns.remove("broken.example.test")  # the failure too
    world.dns.set_mx("broken.example.test", (10, MX1))
    await probed(world, e)
    relabeled = world.shadow.relabel(event)
    assert relabeled.policy.policy_type is PolicyType.STS and relabeled.success


async def test_domain_without_mx_waits_the_full_interval(world: World) -> None:
    """No MX (NODATA or null MX) is an answer, not trouble: no retry every few minutes."""
    world.dns.set_mx("no-mx.example.test")
    e = entry("no-mx.example.test")
    await probed(world, e)
    world.clock.now += RETRY + 1
    await probed(world, e)
    assert world.shadow.stats.rounds == 1
    event = datagram_event("no-mx.example.test")
    assert world.shadow.relabel(event) is event


async def test_aclose_cancels_running_rounds(world: World) -> None:
    world.dns.delay(DOMAIN, 5.0)
    world.shadow.on_policy(entry())
    await asyncio.sleep(0.05)
    await world.shadow.aclose()
    assert world.shadow.pending == 0
    assert world.shadow.verdicts(DOMAIN) == {}


async def test_expired_testing_policy_is_not_applied(world: World) -> None:
    await probed(world, entry(expires=START + HOUR))
    late = datagram_event(at=START + HOUR)
    assert world.shadow.relabel(late) is late
    assert world.shadow.testing_policy(DOMAIN, START) is not None
    assert world.shadow.testing_policy(DOMAIN, START + HOUR) is None


async def test_relabeling_sink_hands_relabeled_events_on(world: World) -> None:
    await probed(world, entry())
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow)
    sink.submit(datagram_event())
    sink.submit(datagram_event("other.example.test"))
    assert [e.policy.policy_type for e in inner.events] == [
        PolicyType.STS,
        PolicyType.NO_POLICY_FOUND,
    ]


async def test_relabeling_sink_passes_events_through_a_relabel_bug(world: World) -> None:
    class Broken(TestingShadow):
        def relabel(self, event: SessionEvent) -> SessionEvent:
            raise RuntimeError("bug")

    inner = ListSink()
    event = datagram_event()
    RelabelingSink(
        inner, Broken(MxProber(ehlo_name="client.example.test"), lambda _d: asyncio.sleep(0, ()))
    ).submit(event)
    assert inner.events == [event]


async def test_relabel_from_collector_thread(world: World) -> None:
    """The libtlsrpt collector submits from its own thread."""
    await probed(world, entry())
    event = await asyncio.to_thread(world.shadow.relabel, datagram_event())
    assert event.policy.policy_type is PolicyType.STS and event.success


# --- mismatch warnings and metrics ---------------------------------------------------------------


def mismatch_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "testing-mx-would-fail" in r.getMessage()
    ]


async def test_mismatch_warned_once_per_domain_mx_and_day(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mta_sts_policyd.tlsrpt.shadow.alerts")
    counted = metrics.TESTING_MISMATCHES.value
    e = entry()
    await probed(world, e)
    lines = mismatch_lines(caplog)
    assert len(lines) == 1
    assert lines[0].startswith(f"event=testing-mx-would-fail domain={DOMAIN} mx={MX2} ")
    assert "result=certificate-host-mismatch reason=" in lines[0]
    assert metrics.TESTING_MISMATCHES.value == counted + 1
    world.clock.now += RECHECK + 1  # 06:30 UTC: same day, new round, no new warning
    await probed(world, e)
    assert world.shadow.stats.rounds == 2 and len(mismatch_lines(caplog)) == 1
    world.clock.now += 86400  # next UTC day
    await probed(world, e)
    assert len(mismatch_lines(caplog)) == 2
    assert metrics.TESTING_MISMATCHES.value == counted + 2


async def test_mismatch_warned_per_domain(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mta_sts_policyd.tlsrpt.shadow.alerts")
    world.dns.set_mx("second.example.test", (10, MX2))
    await probed(world, entry(), entry("second.example.test"))
    domains = sorted(line.split()[1] for line in mismatch_lines(caplog))
    assert domains == sorted([f"domain={DOMAIN}", "domain=second.example.test"])


async def test_probes_metric_counts_each_network_verdict_once(world: World) -> None:
    """Two domains sharing MX2: one network probe, one count."""
    mismatch = metrics.PROBES.labels("certificate-host-mismatch")
    success = metrics.PROBES.labels("success")
    before = mismatch.value, success.value
    world.dns.set_mx("second.example.test", (10, MX2))
    await probed(world, entry(), entry("second.example.test"))
    assert (mismatch.value, success.value) == (before[0] + 1, before[1] + 1)


# --- enforce: precise result types for generic log failures --------------------------------------


async def test_enforce_validation_failure_refined_by_probe(world: World) -> None:
    generic = sts_failure(MX2, ResultType.VALIDATION_FAILURE)
    first = await asyncio.to_thread(world.shadow.relabel, generic)  # collector thread
    assert first is generic  # no verdict yet: a probe is requested
    await asyncio.sleep(0)  # the loop picks up the request
    await world.shadow.join()
    assert world.smtp.record.sni == [MX2]
    refined = world.shadow.relabel(sts_failure(MX2, ResultType.VALIDATION_FAILURE))
    (detail,) = refined.failures
    assert detail.result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    assert detail.failure_reason_code == "certificate-host-mismatch"
    assert detail.receiving_ip == "127.0.0.1" and refined.policy == generic.policy


async def test_refine_requests_one_probe_per_mx(world: World) -> None:
    for _ in range(5):
        world.shadow.relabel(sts_failure(MX2, ResultType.VALIDATION_FAILURE))
    await asyncio.sleep(0)
    assert world.shadow.pending == 1
    await world.shadow.join()
    assert world.smtp.record.connections == 1


async def test_refine_leaves_precise_passing_and_successful_events(world: World) -> None:
    await probed(world, entry())  # verdicts for MX1 (pass) and MX2 (mismatch) cached
    precise = sts_failure(MX2, ResultType.CERTIFICATE_EXPIRED)
    passed = sts_failure(MX1, ResultType.VALIDATION_FAILURE)
    ref = PolicyRef(PolicyType.STS, "enforce.example.test")
    success = SessionEvent(START, "enforce.example.test", ref, True)
    for event in (precise, passed, success):
        assert world.shadow.relabel(event) is event
    assert world.shadow.pending == 0


async def test_refine_ignores_stale_verdicts(world: World) -> None:
    await probed(world, entry())
    world.clock.now += 2 * RECHECK
    late = sts_failure(MX2, ResultType.VALIDATION_FAILURE, at=world.clock.now)
    assert world.shadow.relabel(late) is late
    await asyncio.sleep(0)
    await world.shadow.join()
    assert (
        world.shadow.relabel(late).failures[0].result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    )


# --- holding sessions until the domain's probe round ends (issue 6 §3) ---------------------------

SLOW = 0.4
"""DNS delay of a slow MX lookup: the round runs that long (the discovery timeout is 1 s)."""


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def bad_first(w: World, delay: float = SLOW) -> CacheEntry:
    """A testing domain whose primary MX would fail; its MX lookup takes `delay`."""
    w.dns.set_mx("bad-first.example.test", (5, MX2), (10, MX1))
    w.dns.delay("bad-first.example.test", delay)
    return entry("bad-first.example.test")


async def test_session_during_first_round_waits_for_its_verdict(world: World) -> None:
    """The e2e race: lookup starts the round, the delivery's session arrives before it ends."""
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow)
    world.shadow.on_policy(bad_first(world))
    sink.submit(datagram_event("bad-first.example.test"))  # success datagram, no MX named
    assert inner.events == [] and sink.held == 1
    await world.shadow.join()
    (event,) = inner.events
    assert event.policy.policy_type is PolicyType.STS and not event.success
    assert event.failures[0].result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    assert sink.held == 0 and sink.stats.held == sink.stats.released == 1


async def test_session_from_collector_thread_waits_for_its_verdict(world: World) -> None:
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow)
    world.shadow.on_policy(entry())
    await asyncio.to_thread(sink.submit, datagram_event())
    assert inner.events == [] and sink.held == 1
    await world.shadow.join()
    (event,) = inner.events
    assert event.policy.policy_type is PolicyType.STS and event.success


async def test_sessions_racing_the_round_end_are_never_stranded(world: World) -> None:
    """A thread submits while the round ends: each session relabelled once, none left held."""
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow)
    world.shadow.on_policy(bad_first(world, 0.1))
    sent = 0

    def flood() -> None:
        nonlocal sent
        stop = time.monotonic() + 0.3
        while time.monotonic() < stop:
            sink.submit(datagram_event("bad-first.example.test"))
            sent += 1
            time.sleep(0.0005)

    await asyncio.gather(asyncio.to_thread(flood), world.shadow.join())
    await until(lambda: len(inner.events) == sent, 1.0)
    assert sink.held == 0 and sink.stats.held > 0
    assert {(e.policy.policy_type, e.success) for e in inner.events} == {(PolicyType.STS, False)}


async def test_non_testing_sessions_never_wait(world: World) -> None:
    """Enforce, none and unknown domains, sts failures and decided sessions pass at once."""
    world.dns.set_mx("none.example.test", (10, MX1))
    await probed(world, entry())  # DOMAIN judged: its sessions are decided
    world.shadow.on_policy(entry("none.example.test", policy(Mode.NONE)))
    world.shadow.on_policy(entry("enforce.example.test", policy(Mode.ENFORCE)))
    world.shadow.on_policy(bad_first(world))  # a round is running meanwhile
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow)
    events = [
        datagram_event("none.example.test"),
        datagram_event("enforce.example.test"),
        datagram_event("unknown.example.test"),
        sts_failure(MX1, ResultType.CERTIFICATE_EXPIRED),
        datagram_event(DOMAIN),
    ]
    for event in events:
        sink.submit(event)
    assert len(inner.events) == len(events) and sink.held == 0 and sink.stats.held == 0
    assert inner.events[-1].policy.policy_type is PolicyType.STS


async def test_per_domain_and_global_caps_hand_on_unchanged(world: World) -> None:
    world.dns.set_mx("second.example.test", (10, MX1))
    world.dns.delay("second.example.test", SLOW)
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow, max_per_domain=2, max_held=3)
    world.shadow.on_policy(bad_first(world))
    world.shadow.on_policy(entry("second.example.test"))
    first = [datagram_event("bad-first.example.test") for _ in range(3)]
    second = [datagram_event("second.example.test") for _ in range(2)]
    for event in first + second:
        sink.submit(event)
    assert inner.events == [first[2], second[1]]  # per-domain cap, then global cap
    assert all(e.policy.policy_type is PolicyType.NO_POLICY_FOUND for e in inner.events)
    assert sink.held == 3 and sink.stats.overflow == 2
    await world.shadow.join()
    assert len(inner.events) == 5 and sink.held == 0
    assert [e.policy.policy_type for e in inner.events[2:]] == [PolicyType.STS] * 3


async def test_max_hold_hands_on_unchanged_before_the_round_ends(world: World) -> None:
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow, max_hold=0.05)
    world.shadow.on_policy(bad_first(world, 0.6))
    event = datagram_event("bad-first.example.test")
    sink.submit(event)
    await until(lambda: bool(inner.events), 0.5)
    assert world.shadow.pending == 1  # the round has not ended: expired, not released
    assert inner.events == [event] and sink.stats.expired == 1 and sink.held == 0
    await world.shadow.join()
    assert inner.events == [event]  # handed on once


async def test_aclose_flushes_held_sessions_unchanged(world: World) -> None:
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow, close_grace=0.05)
    world.shadow.on_policy(bad_first(world, 0.6))
    event = datagram_event("bad-first.example.test")
    sink.submit(event)
    await sink.aclose()
    assert inner.events == [event] and sink.stats.flushed == 1 and sink.held == 0
    late = datagram_event("bad-first.example.test")
    sink.submit(late)  # closed: nothing waits any more
    assert inner.events == [event, late]
    await world.shadow.join()
    assert inner.events == [event, late]


async def test_aclose_gives_the_running_round_its_grace(world: World) -> None:
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow, close_grace=5.0)
    world.shadow.on_policy(bad_first(world))
    sink.submit(datagram_event("bad-first.example.test"))
    started = time.monotonic()
    await sink.aclose()
    assert time.monotonic() - started < 2.0
    (event,) = inner.events
    assert event.policy.policy_type is PolicyType.STS and not event.success
    assert sink.stats.released == 1 and sink.stats.flushed == 0


async def test_shadow_aclose_releases_held_sessions_of_cancelled_rounds(world: World) -> None:
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow)
    world.shadow.on_policy(bad_first(world, 0.6))
    event = datagram_event("bad-first.example.test")
    sink.submit(event)
    await asyncio.sleep(0.05)
    await world.shadow.aclose()
    assert inner.events == [event] and sink.held == 0


async def test_due_round_is_started_for_a_waiting_session(world: World) -> None:
    """After a failed MX lookup the retry is due; a session starts it and gets its verdict."""
    world.dns.fail("broken.example.test", "servfail", "MX")
    await probed(world, entry("broken.example.test"))
    world.clock.now += RETRY + 1
    world.dns.remove("broken.example.test")  # the failure too
    world.dns.set_mx("broken.example.test", (10, MX1))
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow)
    sink.submit(datagram_event("broken.example.test", at=world.clock.now))
    assert inner.events == [] and sink.held == 1
    await asyncio.sleep(0)  # the loop picks up the request
    await world.shadow.join()
    assert world.shadow.stats.rounds == 2
    (event,) = inner.events
    assert event.policy.policy_type is PolicyType.STS and event.success


async def test_request_for_a_round_no_longer_due_releases_at_once(world: World) -> None:
    """The domain switched to enforce before the requested round started: nothing to wait for."""
    world.dns.set_mx("down-only.example.test", (10, DOWN))
    await probed(world, entry("down-only.example.test"))
    world.clock.now += RETRY + 1
    inner = ListSink()
    sink = RelabelingSink(inner, world.shadow)
    event = datagram_event("down-only.example.test", at=world.clock.now)
    sink.submit(event)
    assert sink.held == 1
    world.shadow.on_policy(entry("down-only.example.test", policy(Mode.ENFORCE)))
    await until(lambda: bool(inner.events), 1.0)
    assert inner.events == [event] and sink.held == 0 and world.shadow.stats.rounds == 1
