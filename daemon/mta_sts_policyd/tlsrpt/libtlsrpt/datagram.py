"""libtlsrpt datagram protocol "dpv 1" (docs/conformance.md: DG-envelope, DG-policy,
DG-failure-detail) -> SessionEvent values. Pure: no I/O/clock.

Postfix >= 3.10 sends one JSON datagram per TLS handshake. The parser is tolerant where the
protocol is loose (missing/other `dpv`, `t` mismatch, missing `policy-domain`, unknown failure
codes) and strict where guessing would put wrong data into a report sent to a third party
(wrong JSON types, unknown `policy-type`, invalid domain names): those raise DatagramError so the
collector counts and quarantines the datagram. Decisions (docs/conformance.md names the tests of
each):

* unknown `policy-type` -> DatagramError. We cannot tell which RFC 8460 policy the session was
  judged against, and inventing `no-policy-found` would tell the domain owner something false.
  The raw datagram stays in the quarantine file (unlike sys4's reporter, which crashes on it).
* unknown failure code (incl. libtlsrpt's internal 901) -> `validation-failure` with a
  `failure-reason-code` naming the code, so no entry is ever without a result type
  (docs/conformance.md: RPT-4.3-result-types).
* missing policy `f` -> inferred: failure iff failure-details are present (collectd drops it).
* missing `policy-domain` (Postfix's no-policy-found) -> the report domain `d` (docs/conformance.md:
RPT-4.4-policy-domain-always).
* empty optional strings ("f": "") -> absent, so "" and missing aggregate together.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from mta_sts_policyd.errors import DatagramError, InvalidName, ResultType
from mta_sts_policyd.sts.names import host_name
from mta_sts_policyd.tlsrpt.model import FailureDetail, PolicyRef, PolicyType, SessionEvent

MAX_TEXT = 256
"""Free text (`a`, `f`, HELO) is cut to this many characters: bounds report size and cardinality."""
MAX_RECORD = 4096
MAX_POLICY_STRING = 8192
MAX_ITEMS = 64
"""Most policies / policy strings / mx patterns / failure details accepted per container."""

POLICY_TYPES = {1: PolicyType.TLSA, 2: PolicyType.STS, 9: PolicyType.NO_POLICY_FOUND}
RESULT_CODES = {
    201: ResultType.STARTTLS_NOT_SUPPORTED,
    202: ResultType.CERTIFICATE_HOST_MISMATCH,
    203: ResultType.CERTIFICATE_NOT_TRUSTED,
    204: ResultType.CERTIFICATE_EXPIRED,
    205: ResultType.VALIDATION_FAILURE,
    301: ResultType.STS_POLICY_FETCH_ERROR,
    302: ResultType.STS_POLICY_INVALID,
    303: ResultType.STS_WEBPKI_INVALID,
    304: ResultType.TLSA_INVALID,
    305: ResultType.DNSSEC_INVALID,
    306: ResultType.DANE_REQUIRED,
}


class Anomaly(StrEnum):
    """Tolerated deviations, counted by the collector (metrics) but not fatal."""

    DPV = "dpv"
    T_MISMATCH = "t-mismatch"
    F_MISSING = "f-missing"
    UNKNOWN_CODE = "unknown-result-code"
    BAD_IP = "bad-ip"
    TRUNCATED = "truncated-text"


@dataclass(frozen=True, slots=True)
class ParsedDatagram:
    events: tuple[SessionEvent, ...]
    anomalies: tuple[Anomaly, ...]


def parse_datagram(data: bytes, received_at: float) -> list[SessionEvent]:
    """One SessionEvent per policy of the datagram; DatagramError if it is unusable."""
    return list(parse_datagram_full(data, received_at).events)


def parse_datagram_full(data: bytes, received_at: float) -> ParsedDatagram:
    """Like parse_datagram, plus the tolerated anomalies for the collector's counters."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatagramError(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError is a ValueError; so is an integer beyond int_max_str_digits.
        raise DatagramError(f"invalid JSON: {str(exc)[:80]}") from None
    parser = _Parser(check_surrogates="\\u" in text)
    events = parser.datagram(obj, received_at)
    return ParsedDatagram(events, tuple(parser.anomalies))


class _Parser:
    """Walks one decoded datagram; collects anomalies; raises DatagramError naming the path."""

    def __init__(self, check_surrogates: bool) -> None:
        self.check_surrogates = check_surrogates
        self.anomalies: list[Anomaly] = []

    def datagram(self, obj: object, received_at: float) -> tuple[SessionEvent, ...]:
        if type(obj) is not dict:
            raise DatagramError("datagram is not a JSON object")
        if obj.get("dpv") != "1":
            self.anomalies.append(Anomaly.DPV)
        report_domain = _domain(self._str(obj, "d", "d"), "d")
        record = self._opt_str(obj, "pr", "pr")
        if record is not None and len(record) > MAX_RECORD:
            raise DatagramError("pr: TLSRPT record too long")
        policies = self._list(obj, "policies", "policies")
        if not policies:
            raise DatagramError("policies: missing or empty")
        return tuple(
            self.policy(p, f"policies[{i}]", report_domain, record, received_at)
            for i, p in enumerate(policies)
        )

    def policy(
        self, obj: object, path: str, report_domain: str, record: str | None, at: float
    ) -> SessionEvent:
        if type(obj) is not dict:
            raise DatagramError(f"{path}: not an object")
        code = self._int(obj, "policy-type", path)
        policy_type = POLICY_TYPES.get(code) if code is not None else None
        if policy_type is None:
            raise DatagramError(f"{path}.policy-type: unknown value {code!r}")
        domain = self._opt_str(obj, "policy-domain", path)
        ref = PolicyRef(
            policy_type,
            _domain(domain, f"{path}.policy-domain") if domain else report_domain,
            self._strings(obj, "policy-string", path, MAX_POLICY_STRING),
            tuple(_domain(m, f"{path}.mx-host") for m in self._strings(obj, "mx-host", path, 255)),
        )
        raw_details = self._list(obj, "failure-details", path) or []
        details = tuple(
            self.detail(d, f"{path}.failure-details[{i}]") for i, d in enumerate(raw_details)
        )
        declared = self._int(obj, "t", path)
        if declared != len(details):
            self.anomalies.append(Anomaly.T_MISMATCH)
        final = self._int(obj, "f", path)
        if final is None:
            self.anomalies.append(Anomaly.F_MISSING)
            final = 1 if details else 0
        elif final not in (0, 1):
            raise DatagramError(f"{path}.f: expected 0 or 1, got {final}")
        return SessionEvent(at, report_domain, ref, final == 0, details, record)

    def detail(self, obj: object, path: str) -> FailureDetail:
        if type(obj) is not dict:
            raise DatagramError(f"{path}: not an object")
        code = self._int(obj, "c", path)
        if code is None:
            raise DatagramError(f"{path}.c: missing")
        reason = self._text(obj, "f", path)
        result = RESULT_CODES.get(code)
        if result is None:
            self.anomalies.append(Anomaly.UNKNOWN_CODE)
            result = ResultType.VALIDATION_FAILURE
            reason = _cut(f"libtlsrpt-code-{code}" + (f": {reason}" if reason else ""))
        return FailureDetail(
            result,
            sending_mta_ip=self._ip(obj, "s", path),
            receiving_mx_hostname=_hostname_or_text(self._text(obj, "n", path)),
            receiving_mx_helo=_helo(self._opt_str(obj, "h", path)),
            receiving_ip=self._ip(obj, "r", path),
            additional_information=self._text(obj, "a", path),
            failure_reason_code=reason,
        )

    # -- typed field access -------------------------------------------------------------

    def _opt_str(self, obj: dict[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        if value is None:
            return None
        if type(value) is not str:
            raise DatagramError(f"{path}.{key}: expected string, got {type(value).__name__}")
        if self.check_surrogates:
            _no_surrogates(value, f"{path}.{key}")
        return value

    def _str(self, obj: dict[str, Any], key: str, path: str) -> str:
        value = self._opt_str(obj, key, path)
        if not value:
            raise DatagramError(f"{path}: missing or empty")
        return value

    def _text(self, obj: dict[str, Any], key: str, path: str) -> str | None:
        value = self._opt_str(obj, key, path)
        if not value:
            return None
        if len(value) > MAX_TEXT:
            self.anomalies.append(Anomaly.TRUNCATED)
            return _cut(value)
        return value

    def _int(self, obj: dict[str, Any], key: str, path: str) -> int | None:
        value = obj.get(key)
        if value is None or type(value) is int:
            return value
        raise DatagramError(f"{path}.{key}: expected integer, got {type(value).__name__}")

    def _list(self, obj: dict[str, Any], key: str, path: str) -> list[Any] | None:
        value = obj.get(key)
        if value is None:
            return None
        if type(value) is not list:
            raise DatagramError(f"{path}.{key}: expected array, got {type(value).__name__}")
        if len(value) > MAX_ITEMS:
            raise DatagramError(f"{path}.{key}: more than {MAX_ITEMS} items")
        return value

    def _strings(self, obj: dict[str, Any], key: str, path: str, limit: int) -> tuple[str, ...]:
        items = self._list(obj, key, path) or []
        for item in items:
            if type(item) is not str:
                raise DatagramError(f"{path}.{key}: expected strings")
            if len(item) > limit:
                raise DatagramError(f"{path}.{key}: item longer than {limit}")
            if self.check_surrogates:
                _no_surrogates(item, f"{path}.{key}")
        return tuple(items)

    def _ip(self, obj: dict[str, Any], key: str, path: str) -> str | None:
        value = self._opt_str(obj, key, path)
        if not value:
            return None
        normal = _ip_text(value)
        if normal is None:
            self.anomalies.append(Anomaly.BAD_IP)
        return normal


def _no_surrogates(value: str, path: str) -> None:
    """JSON escapes can smuggle lone surrogates, which no UTF-8 writer downstream accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DatagramError(f"{path}: lone surrogate escape") from None


def _cut(value: str) -> str:
    return value[:MAX_TEXT]


@lru_cache(maxsize=4096)
def _domain(value: str, path: str) -> str:
    """Lower case, one trailing dot stripped, A-label (RFC 8460 §4.4); `*.` kept for mx patterns."""
    prefix, name = ("*.", value[2:]) if value.startswith("*.") else ("", value)
    try:
        return prefix + host_name(name)
    except InvalidName as exc:
        raise DatagramError(f"{path}: not a valid domain name ({exc})") from None


def _hostname_or_text(value: str | None) -> str | None:
    """A valid host name is normalised like a domain; anything else is kept as bounded text."""
    if value is None:
        return None
    try:
        return _domain(value, "n")
    except DatagramError:
        return value


def _helo(value: str | None) -> str | None:
    """First line of the EHLO reply, without a reply code, first word only: one name per MX."""
    if not value:
        return None
    line = value.split("\n", 1)[0].split("\r", 1)[0].strip()
    if line[:3].isdigit() and line[3:4] in ("-", " "):
        line = line[4:].strip()
    words = line.split(None, 1)
    if not words:
        return None
    return _hostname_or_text(_cut(words[0]))


@lru_cache(maxsize=4096)
def _ip_text(value: str) -> str | None:
    """RFC 5952 text (IPv4-mapped IPv6 as `::ffff:a.b.c.d`, §5); None if not an address."""
    text = value.strip().removeprefix("[").removesuffix("]")
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)
