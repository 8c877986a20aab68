"""Classifier for Postfix smtp(8) log messages about TLS (docs/conformance.md: PF-maillog-summary
and the rows after it). Pure; never raises.

Turns one message text (the part after `postfix/smtp[PID]: `) into a typed record; `maillog.py`
assembles the records into sessions. Verified against Postfix 3.7 (tests/fixtures/maillog);
the other forms are from Postfix's source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.tlsrpt.model import FailureDetail

_PEER = r"(?P<host>[^\s\[\]]+)\[(?P<addr>[^\]\s]*)\](?::(?P<port>\d{1,5}))?"
_QID = r"(?P<qid>[0-9A-F]{5,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,})"
_SUMMARY = re.compile(
    r"(?P<level>Verified|Trusted|Untrusted|Anonymous) TLS connection (?P<how>established|reused)"
    rf" to {_PEER}: .*"
)
_VERIFY = re.compile(
    rf"(?:(?:server|CA) )?certificate verification failed for {_PEER}: (?P<why>.*)"
)
_REUSED_UNTRUSTED = re.compile(rf"{_PEER}: re-using session with untrusted certificate.*")
_SSL_ERROR = re.compile(rf"SSL_connect error to {_PEER}: .*")
_DELIVERY = re.compile(
    rf"{_QID}: to=<(?P<rcpt>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?:{_PEER}|none), "
    r"(?P<fields>.*?)status=(?P<status>\w+)(?: \((?P<why>.*)\))?"
)
_NONFINAL = re.compile(rf"{_QID}: (?P<why>.*)")
_TLSRPT = re.compile(r"TLSRPT: status=\w+, domain=.*")
_CONN_REUSED = re.compile(r"(?:^|, )conn_use=\d+, ")
_AFTER_EHLO = re.compile(r"\(in reply to (?:MAIL FROM|RCPT TO|DATA|end of DATA) command\)$")
"""A server reply to a mail transaction command: EHLO passed (and, without TLS, no STARTTLS)."""
_NOT_OFFERED = "TLS is required, but was not offered by host"
_REFUSED = re.compile(r"TLS is required, but host \S+ refused to start TLS: (?P<reply>.*)")
_HANDSHAKE = "Cannot start TLS: handshake failure"
_NOT_VERIFIED = "Server certificate not verified"
_HOST_IN = re.compile(r"\bhost (?P<host>[^\s\[\]]+)\[(?P<addr>[^\]\s]*)\](?P<port>)")
_NUM = re.compile(r"num=(?P<num>\d+):(?P<text>.*)")
_EXTERNAL = re.compile(r"external policy failure \((?P<type>[\w-]+)\)")


@dataclass(frozen=True, slots=True)
class Peer:
    host: str
    addr: str
    port: int | None


@dataclass(frozen=True, slots=True)
class Handshake:
    """`LEVEL TLS connection established to HOST[ADDR]:PORT: ...` (docs/conformance.md:
    PF-maillog-summary)."""

    peer: Peer
    level: str
    reused: bool


@dataclass(frozen=True, slots=True)
class CertFailure:
    """A certificate verification failure line (docs/conformance.md: PF-maillog-verify-failure);
    `failure` is its RFC 8460 meaning."""

    peer: Peer
    failure: tuple[ResultType, str]


@dataclass(frozen=True, slots=True)
class HandshakeError:
    """`SSL_connect error to HOST[ADDR]:PORT: ...`: the TLS handshake broke."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class QueueReason:
    """`QUEUEID: REASON` for a non-final MX (docs/conformance.md: PF-maillog-delivery), or a
    delivery status line when `rcpt` set."""

    queue_id: str
    reason: str
    rcpt: str | None = None
    relay: Peer | None = None
    status: str | None = None
    conn_reused: bool = False
    """`conn_use=N`: delivered over a cached connection (no new session)."""

    @property
    def transacted(self) -> bool:
        """The connection got as far as a mail transaction (the message was sent, or the
        server answered MAIL FROM, RCPT TO or DATA)."""
        return self.status == "sent" or bool(_AFTER_EHLO.search(self.reason))


@dataclass(frozen=True, slots=True)
class Ignored:
    """A line of a known kind that carries nothing to count (e.g. a 3.10 `TLSRPT:` line)."""

    kind: str


Message = Handshake | CertFailure | HandshakeError | QueueReason | Ignored


def parse_message(message: str) -> Message | None:
    """Classify one smtp(8) message text; None when it is not a TLS-relevant line."""
    if m := _SUMMARY.fullmatch(message):
        return Handshake(_peer(m), m["level"], m["how"] == "reused")
    if m := _VERIFY.fullmatch(message):
        return CertFailure(_peer(m), classify_cert_failure(m["why"]))
    if m := _REUSED_UNTRUSTED.fullmatch(message):
        return CertFailure(_peer(m), (ResultType.CERTIFICATE_NOT_TRUSTED, "untrusted-reused"))
    if m := _SSL_ERROR.fullmatch(message):
        return HandshakeError(_peer(m))
    if m := _DELIVERY.fullmatch(message):
        relay = _peer(m) if m["host"] is not None else None
        reused = bool(_CONN_REUSED.search(m["fields"]))
        return QueueReason(m["qid"], m["why"] or "", m["rcpt"], relay, m["status"], reused)
    if _TLSRPT.fullmatch(message):
        return Ignored("tlsrpt")
    if (m := _NONFINAL.fullmatch(message)) and tls_delivery_failure(m["why"]) is not None:
        return QueueReason(m["qid"], m["why"])
    return None


def peer_in(text: str) -> Peer | None:
    """The `host HOST[ADDR]` a delivery reason names (not-offered, refused), if any."""
    m = _HOST_IN.search(text)
    return _peer(m) if m else None


def _peer(m: re.Match[str]) -> Peer:
    port = m["port"]
    return Peer(m["host"].lower(), m["addr"], int(port) if port else None)


def classify_cert_failure(why: str) -> tuple[ResultType, str]:
    """RFC 8460 result type and a short reason code for a verification failure text."""
    why = why.strip()
    if m := _NUM.fullmatch(why):
        return _by_openssl_code(int(m["num"]), m["text"])
    if m := _EXTERNAL.fullmatch(why):
        name = m["type"].replace("_", "-").lower()
        known = {r.value: r for r in ResultType}
        return known.get(name, ResultType.VALIDATION_FAILURE), name
    if why == "certificate has expired":
        return ResultType.CERTIFICATE_EXPIRED, "certificate-expired"
    if why == "self-signed certificate":
        return ResultType.CERTIFICATE_NOT_TRUSTED, "self-signed-certificate"
    if why.startswith("untrusted issuer"):
        return ResultType.CERTIFICATE_NOT_TRUSTED, "untrusted-issuer"
    if why == "not trusted by local or TLSA policy":
        return ResultType.CERTIFICATE_NOT_TRUSTED, "not-trusted"
    if why.startswith("certificate chain longer than limit"):
        return ResultType.CERTIFICATE_NOT_TRUSTED, "chain-too-long"
    return ResultType.VALIDATION_FAILURE, _code(why)


def _by_openssl_code(num: int, text: str) -> tuple[ResultType, str]:
    """Map OpenSSL X509_V_ERR numbers Postfix prints as `num=N:TEXT`."""
    if num == 62:
        return ResultType.CERTIFICATE_HOST_MISMATCH, "hostname-mismatch"
    if num == 10:
        return ResultType.CERTIFICATE_EXPIRED, "certificate-expired"
    if num in (2, 18, 19, 20, 21, 27, 28):
        return ResultType.CERTIFICATE_NOT_TRUSTED, _code(text)
    return ResultType.VALIDATION_FAILURE, _code(text)


def _code(text: str) -> str:
    """A short lower-case hyphenated reason code from free text (bounded, no local details)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)[:64] or "unknown"


def tls_delivery_failure(why: str) -> tuple[ResultType, str] | None:
    """The TLS meaning of a delivery reason text (docs/conformance.md: PF-maillog-delivery), or None
    for non-TLS reasons."""
    if why.startswith(_NOT_OFFERED):
        return ResultType.STARTTLS_NOT_SUPPORTED, "starttls-not-offered"
    if m := _REFUSED.match(why):
        return ResultType.STARTTLS_NOT_SUPPORTED, "starttls-refused-" + _code(m["reply"][:3])
    if why.startswith(_HANDSHAKE):
        return ResultType.VALIDATION_FAILURE, "handshake-failure"
    if why.startswith(_NOT_VERIFIED):
        return ResultType.VALIDATION_FAILURE, "server-certificate-not-verified"
    return None


def failure_detail(peer: Peer, failure: tuple[ResultType, str]) -> FailureDetail:
    """A FailureDetail for `peer`; the MX name is left out when Postfix only knew an address."""
    name = None if peer.host in (peer.addr, "unknown") else peer.host
    return FailureDetail(
        result_type=failure[0],
        receiving_mx_hostname=name,
        receiving_ip=peer.addr or None,
        failure_reason_code=failure[1],
    )
