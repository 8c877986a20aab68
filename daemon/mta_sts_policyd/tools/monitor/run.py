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

from mta_sts_policyd.state_files import write_atomically
from mta_sts_policyd.tools.check.findings import NagiosStatus, worst_status
from mta_sts_policyd.tools.check.gather import Reach
from mta_sts_policyd.tools.check.judge import DomainReport
from mta_sts_policyd.tools.check.observations import Options
from mta_sts_policyd.tools.check.runner import check_one
from mta_sts_policyd.tools.monitor.alerts import AlertSettings, send_alerts
from mta_sts_policyd.tools.monitor.gauges import publish
from mta_sts_policyd.tools.monitor.state import (
    DomainState,
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
    """The findings of the last run, as JSON; written atomically; a broken file is kept aside."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, DomainState]:
        try:
            return state_from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            aside = self.path.with_name(self.path.name + ".broken")
            n = 0
            while aside.exists():  # an earlier broken file is kept too
                n += 1
                aside = self.path.with_name(f"{self.path.name}.broken.{n}")
            log.error(
                "event=monitor-state-unreadable path=%s error=%s kept=%s", self.path, exc, aside
            )
            self.path.replace(aside)
            return {}

    def save(self, states: dict[str, DomainState]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(state_to_json(states), indent=2, sort_keys=True)
        write_atomically(self.path, text.encode("utf-8"))


async def run_once(
    targets: Sequence[Target],
    reach: Reach,
    state_file: StateFile,
    alerts: AlertSettings,
    *,
    clock: Callable[[], float] = time.time,
    concurrency: int = 10,
) -> RunResult:
    states = state_file.load()
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
    for domain in [d for d in states if d not in {t.domain for t in targets}]:
        del states[domain]  # no longer monitored
    state_file.save(states)
    for t in transitions:
        log.warning(
            "event=monitor-transition domain=%s change=%s severity=%s code=%s message=%r",
            t.domain, t.change, t.severity, t.code, t.message,
        )  # fmt: skip
    await send_alerts(alerts, transitions)
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
) -> None:
    """Every `interval` seconds (plus or minus up to `jitter`), until cancelled."""
    while True:
        try:
            await run_once(targets, reach, state_file, alerts, clock=clock)
        except Exception:  # one failed pass must not end monitoring
            log.exception("event=monitor-pass-crashed")
        await sleep(max(1.0, interval + random.uniform(-jitter, jitter)))  # type: ignore[misc]
