"""TLS reports POSTed to the policy host (RFC 8460 §5.4), handed to a BodyIntake.

Under the shipped units that is the spool (reports_in/spool.py: checked here, delivered into a
Maildir the daemon takes in); with `[reports_in] spool_dir` empty, the store itself (a host
running as the daemon's user). The answer is 2xx only once the report is on disk (in the store,
already in it, or in the spool: the same report twice counts once, and a sender told "no" for
a report we hold would only send it again). A report that is refused gets a 4xx with the
reason (413 too large, 415 not a report type, 400 anything the parser or the own-domain rule
refuses) and is quarantined like a refused mail; a store or spool that cannot write gets 503
with Retry-After, so the sender tries again later.

Every intake runs on one worker thread, one after the other, so the event loop keeps
serving policies while a report is written.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from aiohttp import web

from mta_sts_policyd.errors import StoreError
from mta_sts_policyd.reports_in.intake import BodyIntake, Outcome

log = logging.getLogger(__name__)

REPORT_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json")
"""RFC 8460 §5.4: the two media types a sender POSTs."""
RETRY_AFTER = "300"
T = TypeVar("T")


class ReportEndpoint:
    """The aiohttp handler for `[host] reports_path`."""

    def __init__(self, intake: BodyIntake, max_bytes: int) -> None:
        self.intake = intake
        self.max_bytes = max_bytes
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports-in")

    def close(self) -> None:
        self._worker.shutdown(wait=True)

    async def handle(self, request: web.Request) -> web.Response:
        source = f"https:{request.remote or '-'}"
        body, complete = await _read_capped(request, self.max_bytes)
        kind = request.content_type.lower()
        if not complete:
            reason = f"body larger than {self.max_bytes} bytes"
            return await self._refused(413, body, reason, source)
        if kind not in REPORT_TYPES:
            reason = f"content type {kind!r} is not a TLS report (RFC 8460 §5.4)"
            return await self._refused(415, body, reason, source)
        try:
            outcome = await self._run(self._take, body, kind, source)
        except StoreError as exc:
            log.error("event=report-store-failed source=%s reason=%r", source, str(exc))
            return _answer(503, "report store unavailable, try again later", retry=True)
        if outcome.stored:
            return _answer(201, "stored")
        if outcome.duplicates:
            return _answer(200, "already stored")
        return _answer(400, "; ".join(outcome.rejected) or "not a report")

    async def _refused(self, status: int, body: bytes, reason: str, source: str) -> web.Response:
        try:
            await self._run(self.intake.refuse, body, reason, source)
        except OSError as exc:  # the quarantine is for inspection; the answer stands
            log.warning("event=quarantine-failed source=%s reason=%r", source, str(exc))
        return _answer(status, reason)

    def _take(self, body: bytes, kind: str, source: str) -> Outcome:
        outcome = self.intake.take_body(body, kind, source)
        if outcome.stored:
            self.intake.prune()
        return outcome

    async def _run(self, func: Callable[..., T], *args: str | bytes) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(func, *args))


async def _read_capped(request: web.Request, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether that was all of it."""
    declared = request.content_length
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if declared is not None and declared > limit and size >= limit:
            break
    body = b"".join(chunks)
    complete = size <= limit and not (declared is not None and declared > limit)
    return body[:limit], complete


def _answer(status: int, text: str, *, retry: bool = False) -> web.Response:
    response = web.Response(status=status, text=text + "\n", content_type="text/plain")
    if retry:
        response.headers["Retry-After"] = RETRY_AFTER
    return response
