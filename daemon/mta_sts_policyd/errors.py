"""The one exception tree of the project.

Library exceptions (dnspython, httpx, ssl, sqlite) are translated into these types in exactly one
place each (discovery.py for DNS/HTTPS, cache.py for the store). "No policy published" and
"could not find out" are different types on purpose: the first may be negatively cached, the
second must never remove a cached policy (RFC 8461 §3.3).
"""

from __future__ import annotations

import errno
from enum import StrEnum


class ResultType(StrEnum):
    """RFC 8460 §4.3 result types (the strings used in reports)."""

    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


class MtaStsError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(MtaStsError):
    """The configuration is invalid; each problem names the key and the expected form.

    One error can carry several problems, so `check-config` lists every bad key at once
    instead of one per run.
    """

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems or ("invalid configuration",)
        super().__init__("; ".join(self.problems))


class InvalidName(MtaStsError, ValueError):
    """A host or domain name that cannot be written as an A-label host name; says why."""


class PolicySyntaxError(MtaStsError):
    """A policy file (RFC 8461 §3.2) is invalid. `line` is 1-based, 0 for whole-body problems."""

    def __init__(self, reason: str, line: int = 0) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line else reason)


class DiscoveryError(MtaStsError):
    """Could not find out whether the domain has a policy (transient or remote failure)."""

    def __init__(self, reason: str, result_type: ResultType = ResultType.STS_POLICY_FETCH_ERROR):
        self.reason = reason
        self.result_type = result_type
        super().__init__(f"{result_type}: {reason}")


class DnsLookupError(DiscoveryError):
    """The `_mta-sts` TXT or MX lookup failed (SERVFAIL, timeout, refused): not an answer."""


class PolicyFetchError(DiscoveryError):
    """The HTTPS policy fetch failed; `result_type` classifies it per RFC 8460."""


class NetstringError(MtaStsError):
    """Malformed socketmap framing; the server closes that connection without replying."""


class StoreError(MtaStsError):
    """The persistent store could not be read or written."""


class StateUnusableError(StoreError):
    """The state directory or a store in it cannot be used at start (full disk, read-only
    mount, permissions): nothing is renamed, `serve` exits with `exit_code` (EX_CANTCREAT),
    which systemd may retry, unlike a configuration error."""

    exit_code = 73


class StateLockedError(MtaStsError):
    """Another `serve` holds the state directory; `serve` exits with `exit_code`
    (EX_UNAVAILABLE) instead of sharing its files and control socket."""

    exit_code = 69


class SocketInUseError(MtaStsError, OSError):
    """A unix socket path another live process listens on. An OSError (EADDRINUSE) like a TCP
    address in use, so `serve` exits 75 for both: the holder is usually the instance being
    replaced, and systemd should try again, not give up as on a configuration error."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EADDRINUSE, message)

    def __str__(self) -> str:
        return str(self.strerror)


class DatagramError(MtaStsError):
    """A libtlsrpt datagram (docs/conformance.md: DG-envelope, DG-policy, DG-failure-detail) is
    unusable: counted and quarantined, never fatal."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class FleetUnavailable(MtaStsError):
    """Redis could not be used for this call (breaker open, timeout, connection or server
    error). Fleet callers fall back to what the node knows; never an answer to Postfix."""


class ReportRejected(MtaStsError):
    """A received TLS report (or the message carrying it) is unusable; `reason` says why.

    Rejected input is kept in the intake's quarantine for inspection, never retried.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
