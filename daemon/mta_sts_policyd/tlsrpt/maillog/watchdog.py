"""Say when the mail-log follower reads nothing: otherwise TLS reporting collects nothing, silently.

Two signals: a follower reports that it cannot read its source (`unreadable`: journalctl's
permission hint, an unreadable file), and no line at all has arrived for `silence_after` seconds
(Postfix stopped logging there, or the drop-in that grants journal access is missing). Both are
logged at ERROR (once per episode, not per check) and exported as metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

UNREADABLE_HINTS = (
    "not seeing messages from other users",
    "permission denied",
    "no journal files were found",
    "failed to open",
)
"""journalctl's stderr lines that mean it reads nothing of Postfix's (lower case)."""


class MaillogWatchdog:
    """Reads the follower's line counter; `check()` runs every `interval` seconds."""

    def __init__(
        self,
        lines: Callable[[], int],
        *,
        source: str,
        silence_after: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lines, self.source, self.silence_after, self.clock = (
            lines,
            source,
            silence_after,
            clock,
        )
        self.read_errors = 0
        self.silent = False
        self.last_line_at = 0.0
        """Wall time a line last arrived (0: none since start)."""
        self._seen, self._since = lines(), clock()

    def unreadable(self, reason: str) -> None:
        """The follower cannot read its source; logged and counted every time it happens."""
        self.read_errors += 1
        log.error("event=maillog-unreadable source=%s reason=%r", self.source, reason)

    def follower_message(self, text: str) -> None:
        """One stderr line of the follower's helper (journalctl): an error if it means that
        nothing can be read, else a warning; never thrown away."""
        if any(hint in text.lower() for hint in UNREADABLE_HINTS):
            self.unreadable(text)
        else:
            log.warning("event=maillog-follower-message source=%s message=%r", self.source, text)

    def check(self) -> None:
        now, seen = self.clock(), self.lines()
        if seen != self._seen:
            self._seen, self._since, self.last_line_at = seen, now, now
            if self.silent:
                self.silent = False
                log.info("event=maillog-reading-again source=%s", self.source)
            return
        quiet = now - self._since
        if self.silence_after > 0 and quiet >= self.silence_after and not self.silent:
            self.silent = True
            log.error("event=maillog-silent source=%s seconds=%d hint=%r", self.source, quiet,
                      "no Postfix log line read; check the source and read access")  # fmt: skip

    async def run(self, stop: asyncio.Event, interval: float = 10.0) -> None:
        while not stop.is_set():
            self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
