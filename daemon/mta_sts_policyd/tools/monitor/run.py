"""The monitor loop: check the own domains, advance the state, log and alert transitions,
save the state file, refresh the gauges; every interval (jittered), or once."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mta_sts_policyd.errors import StoreError
from mta_sts_policyd.state_files import write_atomically
from mta_sts_policyd.tools.check.findings import NagiosStatus, worst_status
from mta_sts_policyd.tools.check.gather import Reach
from mta_sts_policyd.tools.check.judge import DomainReport
from mta_sts_policyd.tools.check.observations import Options
from mta_sts_policyd.tools.check.runner import check_one
from mta_sts_policyd.tools.monitor.alerts import AlertSettings, alert_channels, send_alerts
from mta_sts_policyd.tools.monitor.gauges import publish
from mta_sts_policyd.tools.monitor.state import (
    Saved,
    Transition,
    advance,
    state_from_json,
    state_to_json,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One own domain and its per-domain expectations."""

    domain: str
    options: Options


@dataclass(frozen=True)
class RunResult:
    status: NagiosStatus
    transitions: list[Transition]
    reports: list[DomainReport]


class StateFile:
    """The findings of the last run and the alerts not yet delivered, as JSON; written
    atomically. A file that is not a monitor state is kept aside and monitoring starts afresh;
    a path that cannot be read or written at all (a directory, no permission) is a StoreError
    and nothing is moved."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Saved:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Saved()
        except OSError as exc:
            raise StoreError(f"cannot read the monitor state {self.path}: {exc}") from None
        try:
            return state_from_json(json.loads(raw.decode("utf-8")))
        except ValueError as exc:  # also not UTF-8, not JSON
            aside = self.path.with_name(self.path.name + ".broken")
            n = 0
            while aside.exists():  # an earlier broken file is kept too
                n += 1
                aside = self.path.with_name(f"{self.path.name}.broken.{n}")
            log.error(
                "event=monitor-state-unreadable path=%s error=%s kept=%s", self.path, exc, aside
            )
            self.path.replace(aside)
            return Saved()

    def save(self, saved: Saved) -> None:
        text = json.dumps(state_to_json(saved), indent=2, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, text.encode("utf-8"))
        except OSError as exc:
            raise StoreError(f"cannot write the monitor state {self.path}: {exc}") from None


async def run_once(
    targets: Sequence[Target],
    reach: Reach,
    state_file: StateFile,
    alerts: AlertSettings,
    *,
    clock: Callable[[], float] = time.time,
    concurrency: int = 10,
    forget_others: bool = True,
) -> RunResult:
    """One pass. `forget_others=False` (a pass over domains named on the command line) keeps
    the state of the other monitored domains, so the next full pass does not alert them anew."""
    saved = state_file.load()
    states = dict(saved.domains)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(target: Target) -> DomainReport:
        async with gate:
            return await check_one(
                target.domain, reach, target.options, lambda: datetime.fromtimestamp(clock(), UTC)
            )

    reports = list(await asyncio.gather(*(one(t) for t in targets)))
    transitions: list[Transition] = []
    now = clock()
    for report in reports:
        states[report.domain], changed = advance(states.get(report.domain), report, now)
        transitions += changed
    if forget_others:
        for domain in [d for d in states if d not in {t.domain for t in targets}]:
            del states[domain]  # no longer monitored
    for t in transitions:
        log.warning(
            "event=monitor-transition domain=%s change=%s severity=%s code=%s message=%r",
            t.domain, t.change, t.severity, t.code, t.message,
        )  # fmt: skip
    pending = {c: (*saved.unsent.get(c, ()), *transitions) for c in alert_channels(alerts)}
    unsent = await send_alerts(alerts, pending)
    for channel, kept in unsent.items():
        log.warning("event=monitor-alert-kept channel=%s transitions=%d", channel, len(kept))
    state_file.save(Saved(states, unsent))
    publish(states, now)
    return RunResult(worst_status(r.status for r in reports), transitions, reports)


async def run_forever(
    targets: Sequence[Target],
    reach: Reach,
    state_file: StateFile,
    alerts: AlertSettings,
    *,
    interval: float,
    jitter: float,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], object] = asyncio.sleep,
    forget_others: bool = True,
) -> None:
    """Every `interval` seconds (plus or minus up to `jitter`), until cancelled."""
    while True:
        try:
            await run_once(
                targets, reach, state_file, alerts, clock=clock, forget_others=forget_others
            )
        except Exception:  # one failed pass must not end monitoring
            log.exception("event=monitor-pass-crashed")
        await sleep(max(1.0, interval + random.uniform(-jitter, jitter)))  # type: ignore[misc]
