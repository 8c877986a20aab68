"""Run `check` over many domains with bounded concurrency; one DomainReport per domain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from mta_sts_policyd.tools.check.findings import NagiosStatus, finding
from mta_sts_policyd.tools.check.gather import Reach, observe_domain
from mta_sts_policyd.tools.check.judge import DomainReport, SenderView, judge_domain
from mta_sts_policyd.tools.check.observations import Options

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (domains done, domains in all) after each domain."""


async def check_domains(
    domains: Sequence[str],
    reach: Reach,
    options: Options,
    *,
    now: Callable[[], datetime],
    concurrency: int = 10,
    progress: Progress | None = None,
) -> list[DomainReport]:
    """Reports in the order of `domains` (A-label names); at most `concurrency` at a time."""
    gate = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(domain: str) -> DomainReport:
        nonlocal done
        async with gate:
            report = await check_one(domain, reach, options, now)
        done += 1
        if progress is not None:
            progress(done, len(domains))
        return report

    return list(await asyncio.gather(*(one(d) for d in domains)))


async def check_one(
    domain: str, reach: Reach, options: Options, now: Callable[[], datetime]
) -> DomainReport:
    try:
        seen = await observe_domain(domain, reach)
    except Exception as exc:  # one broken domain must not stop a run over many
        log.exception("event=check-crashed domain=%s", domain)
        return failed_report(domain, f"{type(exc).__name__}: {exc}")
    return judge_domain(seen, options, now())


def failed_report(domain: str, reason: str) -> DomainReport:
    problem = finding("CHECK_FAILED", reason, name=domain)
    return DomainReport(
        domain, (problem,), NagiosStatus.UNKNOWN, None, None, (), SenderView("", (), False)
    )
