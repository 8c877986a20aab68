"""TLS sessions from Postfix's mail log, for Postfix < 3.10 (no TLSRPT hook there). Pure.

Postfix settings this needs (docs/conformance.md: PF-maillog-summary and the rows after it):
- `smtp_tls_loglevel = 1`: the default 0 logs no handshake summary, so no success is ever seen.
- To also see certificate failures at `may`/`encrypt` (testing-mode or no-policy domains):
  `smtp_tls_loglevel = 1, untrusted` (no numeric level includes `untrusted`). At verify/secure,
  which the daemon answers for enforce domains, failures are always logged.
- `smtp_tls_connection_reuse = no` (the default): with reuse, tlsproxy(8) logs the handshake
  under its own process and it cannot be tied to a delivery.

Assembly: each TLS line of one smtp(8) process (handshake summary, certificate failure,
SSL_connect error) opens or extends an *attempt* for `HOST[ADDR]:PORT`. The process's next
`QUEUEID: REASON` line (a non-final MX failed) closes the attempt; its next
`QUEUEID: to=<RCPT>, relay=...` line closes the rest and names the next-hop domain: the
recipient's domain. Limits: the log never names the next-hop itself, so mail routed by
transport_maps or a relayhost is attributed to the recipient domain (RFC 8460 §1.1 would name
the relay's domain); only the first `to=` line of a delivery is used; attempts of a process
that logs no delivery line within an hour are dropped (`unattributed`); a delivery over a cached
connection (`conn_use=N`) had no handshake and is not a session; `TLSRPT:` lines of
Postfix >= 3.10 are recognised and not counted (use the libtlsrpt collector there).

Judging: with an STS policy (per `PolicyAt`: what the daemon answered) a session succeeds only
when Postfix verified it (`Verified`); a certificate failure line or a TLS delivery failure is a
failure; `Trusted`/`Untrusted`/`Anonymous` without failure evidence means Postfix did not check
(testing mode, `may`) and the session is not counted (`unjudged`; probe.py covers those
domains). Without a policy (no-policy-found) an established TLS session that did not fail the
delivery is a success; a failed STARTTLS or handshake, or a deferral for an unverified
certificate, is a failure.

Plaintext: a delivery (sent, or answered after EHLO) with no TLS line at all went without TLS,
since `smtp_tls_loglevel = 1` logs every handshake. It is counted only where `PlaintextPolicy`
names a policy that expected TLS (a `testing`-mode domain's, to which the daemon answered
NOTFOUND so Postfix delivered at `may`): a `starttls-not-supported` failure of that policy. Not
for no-policy domains (a plaintext session there is no policy failure) and not over a cached
connection (`conn_use=N`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.sts.keys import policy_domain_for_key
from mta_sts_policyd.tlsrpt.maillog.smtplog import (
    CertFailure,
    Handshake,
    HandshakeError,
    Ignored,
    Message,
    Peer,
    QueueReason,
    failure_detail,
    parse_message,
    peer_in,
    tls_delivery_failure,
)
from mta_sts_policyd.tlsrpt.maillog.syslogline import LogLine, parse_syslog
from mta_sts_policyd.tlsrpt.model import EventSink, PolicyRef, PolicyType, SessionEvent

PolicyAt = Callable[[str, float], PolicyRef | None]
"""(next-hop domain as A-label, unix time) -> the STS policy the daemon answered, or None."""

PlaintextPolicy = Callable[[str, str, float], PolicyRef | None]
"""(next-hop domain, relay MX host, unix time) -> the policy under which a delivery without TLS
to that MX is a `starttls-not-supported` failure (a testing-mode policy), or None."""

Failure = tuple[ResultType, str]
STALE_AFTER = 3600.0
"""Log seconds after which a process's unfinished attempts are dropped."""


@dataclass
class MaillogCounters:
    lines: int = 0
    not_understood: int = 0
    """Lines in no syslog form we know."""
    ignored: int = 0
    """Well-formed lines that say nothing about TLS outcomes (most of a mail log)."""
    sessions: int = 0
    plaintext: int = 0
    """Of `sessions`: deliveries without TLS under a PlaintextPolicy."""
    unjudged: int = 0
    unattributed: int = 0
    skipped: int = 0
    """Over-long lines and NUL regions the follower skipped (never fed here)."""


@dataclass
class _Attempt:
    peer: Peer
    time: float
    level: str | None = None
    cert_failures: list[Failure] = field(default_factory=list)
    broken: bool = False
    reason: Failure | None = None
    closed: bool = False


@dataclass
class _Process:
    last_seen: float
    attempts: list[_Attempt] = field(default_factory=list)
    last_done: tuple[str, Peer | None] | None = None


class MaillogSessions:
    """Feeds log lines in, submits one SessionEvent per judged TLS session to `sink`."""

    def __init__(
        self,
        policy_at: PolicyAt,
        sink: EventSink,
        *,
        tz: dt.tzinfo = dt.UTC,
        max_procs: int = 4096,
        exclude_syslog_names: tuple[str, ...] = (),
        plaintext_policy: PlaintextPolicy | None = None,
    ) -> None:
        self.policy_at = policy_at
        self.plaintext_policy = plaintext_policy
        self.exclude = tuple(name.rstrip("/") + "/" for name in exclude_syslog_names)
        """Report loop prevention: the report sender's own transport (`-o syslog_name=...`)."""
        self.sink = sink
        self.tz = tz
        self.max_procs = max_procs
        self.counters = MaillogCounters()
        self._procs: dict[tuple[str, str, int | None], _Process] = {}

    def feed_line(self, text: str, now: float) -> None:
        """One raw log line; `now` (unix time) dates RFC 3164 lines, which carry no year."""
        self.counters.lines += 1
        line = parse_syslog(text, now=now, tz=self.tz)
        if line is None:
            self.counters.not_understood += 1
            return
        self._handle(line)

    def feed(self, line: LogLine) -> None:
        """One already decoded record (e.g. from the journal)."""
        self.counters.lines += 1
        self._handle(line)

    def _handle(self, line: LogLine) -> None:
        if self.exclude and line.program.startswith(self.exclude):
            self.counters.ignored += 1
            return
        record = parse_message(line.message)
        if record is None or isinstance(record, Ignored):
            self.counters.ignored += 1
            return
        key = (line.host, line.program, line.pid)
        proc = self._procs.pop(key, None) or _Process(line.timestamp)
        proc.last_seen = line.timestamp
        self._procs[key] = proc  # re-inserted: the dict stays ordered by last activity
        self._apply(proc, record, line.timestamp)
        self._expire(line.timestamp)

    def _apply(self, proc: _Process, record: Message, ts: float) -> None:
        if isinstance(record, Handshake):
            if not record.reused:  # tlsproxy connection reuse: no new handshake
                _attempt_for(proc, record.peer, ts).level = record.level
        elif isinstance(record, CertFailure):
            _attempt_for(proc, record.peer, ts).cert_failures.append(record.failure)
        elif isinstance(record, HandshakeError):
            _attempt_for(proc, record.peer, ts).broken = True
        elif isinstance(record, QueueReason) and record.rcpt is None:
            _close(proc, record.reason, None, ts)
        elif isinstance(record, QueueReason):
            self._delivery(proc, record, ts)

    def _delivery(self, proc: _Process, record: QueueReason, ts: float) -> None:
        done = (record.queue_id, record.relay)
        open_attempts = [a for a in proc.attempts if not a.closed]
        if done == proc.last_done and not open_attempts:
            return  # the 2nd.. recipient of a delivery already counted
        _close(proc, record.reason, record.relay, ts)
        attempts, proc.attempts, proc.last_done = proc.attempts, [], done
        domain = _rcpt_domain(record.rcpt or "")
        if not attempts and domain is not None:
            self._plaintext(domain, record, ts)
        for attempt in attempts:
            if domain is None:
                self.counters.unattributed += 1
            else:
                self._emit(domain, attempt)

    def _plaintext(self, domain: str, record: QueueReason, ts: float) -> None:
        """A delivery without any TLS line: a failure where a policy expected TLS (docstring)."""
        relay = record.relay
        if (
            self.plaintext_policy is None
            or relay is None
            or record.conn_reused
            or not record.transacted
        ):
            return
        policy = self.plaintext_policy(domain, relay.host, ts)
        if policy is None:
            return
        detail = failure_detail(relay, (ResultType.STARTTLS_NOT_SUPPORTED, "starttls-not-offered"))
        self.counters.sessions += 1
        self.counters.plaintext += 1
        self.sink.submit(SessionEvent(ts, domain, policy, success=False, failures=(detail,)))

    def _emit(self, domain: str, attempt: _Attempt) -> None:
        policy = self.policy_at(domain, attempt.time)
        verdict = _judge(attempt, is_sts=policy is not None)
        if verdict is None:
            self.counters.unjudged += 1
            return
        ref = policy or PolicyRef(PolicyType.NO_POLICY_FOUND, domain)
        details = tuple(dict.fromkeys(failure_detail(attempt.peer, f) for f in verdict))
        event = SessionEvent(attempt.time, domain, ref, success=not details, failures=details)
        self.counters.sessions += 1
        self.sink.submit(event)

    def _expire(self, now: float) -> None:
        while self._procs:
            key, proc = next(iter(self._procs.items()))
            if len(self._procs) <= self.max_procs and proc.last_seen > now - STALE_AFTER:
                return
            del self._procs[key]
            self.counters.unattributed += len(proc.attempts)


def _attempt_for(proc: _Process, peer: Peer, ts: float) -> _Attempt:
    """The open attempt for `peer` still in its handshake, or a new one (a new connection)."""
    if proc.attempts:
        last = proc.attempts[-1]
        if not last.closed and last.peer == peer and last.level is None and not last.broken:
            return last
    attempt = _Attempt(peer, ts)
    proc.attempts.append(attempt)
    return attempt


def _close(proc: _Process, reason: str, relay: Peer | None, ts: float) -> None:
    """Close open attempts; a TLS failure reason goes to the connection it names."""
    failure = tls_delivery_failure(reason)
    open_attempts = [a for a in proc.attempts if not a.closed]
    if failure is not None:
        named = relay or peer_in(reason)
        target = open_attempts[-1] if open_attempts else None
        unnamed = target is None or (named is not None and not _same_host(target.peer, named))
        if unnamed and named is not None:  # STARTTLS not offered/refused: no TLS line before
            target = _Attempt(named, ts)
            proc.attempts.append(target)
            open_attempts.append(target)
        if target is not None:
            target.reason = failure
    for attempt in open_attempts:
        attempt.closed = True


def _same_host(a: Peer, b: Peer) -> bool:
    return a.host == b.host and a.addr == b.addr


def _judge(attempt: _Attempt, *, is_sts: bool) -> list[Failure] | None:
    """[] for a success, the failures for a failure, None when the log cannot tell."""
    certs = list(dict.fromkeys(attempt.cert_failures))
    hard = attempt.reason
    if hard is None and attempt.broken:
        hard = (ResultType.VALIDATION_FAILURE, "handshake-failure")
    if hard is not None and hard[1] == "server-certificate-not-verified":
        return certs or [_unverified(attempt.level)]
    if hard is not None:
        return [hard]
    if is_sts:
        if certs:
            return certs
        return [] if attempt.level == "Verified" else None
    return [] if attempt.level is not None else None


def _unverified(level: str | None) -> Failure:
    """`Server certificate not verified` without a failure line (Postfix <= 3.5 name checks)."""
    if level == "Trusted":
        return ResultType.CERTIFICATE_HOST_MISMATCH, "hostname-mismatch"
    if level == "Untrusted":
        return ResultType.CERTIFICATE_NOT_TRUSTED, "not-trusted"
    return ResultType.VALIDATION_FAILURE, "server-certificate-not-verified"


def _rcpt_domain(rcpt: str) -> str | None:
    """A-label next-hop domain of a recipient address, None for IP literals and junk."""
    _, at, domain = rcpt.rpartition("@")
    if not at or domain.startswith("["):
        return None
    return policy_domain_for_key(domain)
