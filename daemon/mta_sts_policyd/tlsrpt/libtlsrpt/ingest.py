"""From received datagrams to events: group, parse, submit, quarantine (the ingest thread).

Identical datagrams of one UTC day are merged into one event with a count (Postfix sends the
same bytes for every success to one MX), each distinct datagram is parsed once (datagram.py,
with a small cache), and what cannot be parsed is counted, logged sparingly and quarantined.
The receiver process and its supervision are in collector.py.
"""

from __future__ import annotations

import logging

from mta_sts_policyd.errors import DatagramError
from mta_sts_policyd.tlsrpt.libtlsrpt.datagram import ParsedDatagram, parse_datagram_full
from mta_sts_policyd.tlsrpt.libtlsrpt.quarantine import CollectorStats, Quarantine
from mta_sts_policyd.tlsrpt.model import EventSink, SessionEvent

log = logging.getLogger(__name__)

Item = tuple[float, bytes | tuple[bytes, int]]
"""(receive time, datagram), or (receive time, (head, real size)) when it was too big."""


class DatagramIngest:
    """Turns batches of received datagrams into SessionEvents in `sink`; one thread only."""

    def __init__(
        self,
        sink: EventSink,
        stats: CollectorStats,
        quarantine: Quarantine | None,
        max_datagram: int,
    ) -> None:
        self.sink = sink
        self.stats = stats
        self.quarantine = quarantine
        self.max_datagram = max_datagram
        self._cache: dict[bytes, ParsedDatagram | DatagramError] = {}

    def process(self, items: list[Item]) -> None:
        """Group identical datagrams of one UTC day, then parse and submit each group once."""
        for at, (head, real) in oversized(items):
            self.stats.oversized += 1
            reason = f"datagram of {real} bytes exceeds {self.max_datagram}"
            self._reject(at, reason, head, real, 1)
            self.stats.processed += 1
        for (data, _), (at, n) in group_by_day(items).items():
            try:
                self._handle(data, at, n)
            except Exception:  # never let one datagram or a sink bug end ingestion
                self.stats.sink_errors += n
                log.exception("event=tlsrpt-sink-failed")
            self.stats.processed += n

    def _handle(self, data: bytes, at: float, n: int) -> None:
        parsed = self._parse_cached(data, at)
        if isinstance(parsed, DatagramError):
            self._reject(at, parsed.reason, data, len(data), n)
            return
        for anomaly in parsed.anomalies:
            self.stats.anomalies[anomaly] += n
        submit = self.sink.submit
        for event in parsed.events:
            if event.timestamp != at or n != 1:
                event = _restamp(event, at, n)
            submit(event)
            self.stats.events_submitted += event.count

    def _parse_cached(self, data: bytes, at: float) -> ParsedDatagram | DatagramError:
        """Postfix repeats identical datagrams (every success to one MX is the same bytes)."""
        hit = self._cache.get(data)
        if hit is not None:
            return hit
        try:
            result: ParsedDatagram | DatagramError = parse_datagram_full(data, at)
        except DatagramError as exc:
            result = exc
        if len(data) <= 4096:
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[data] = result
        return result

    def _reject(self, at: float, reason: str, data: bytes, size: int, n: int) -> None:
        self.stats.rejected += n
        count = self.stats.rejected
        if count & (count - 1) == 0 or n > 1:  # 1, 2, 4, 8, ...: visible without flooding
            log.warning("event=tlsrpt-datagram-rejected count=%d reason=%r", count, reason)
        if self.quarantine is not None:
            self.quarantine.add(at, reason, data, size, n)


def oversized(items: list[Item]) -> list[tuple[float, tuple[bytes, int]]]:
    """The items cut at max_datagram by the receiver: (time, (head, real size))."""
    return [(at, item) for at, item in items if type(item) is tuple]


def group_by_day(items: list[Item]) -> dict[tuple[bytes, int], tuple[float, int]]:
    """Identical datagrams of one UTC day -> (first receive time, how many); oversized skipped.

    Pure, so the midnight split is tested without a clock.
    """
    groups: dict[tuple[bytes, int], tuple[float, int]] = {}
    for at, item in items:
        if type(item) is bytes:
            key = (item, int(at // 86400))
            first = groups.get(key)
            groups[key] = (at, 1) if first is None else (first[0], first[1] + 1)
    return groups


def _restamp(event: SessionEvent, at: float, n: int) -> SessionEvent:
    return SessionEvent(
        at,
        event.report_domain,
        event.policy,
        event.success,
        event.failures,
        event.tlsrpt_record,
        event.count * n,
    )
