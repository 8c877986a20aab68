"""What `check` saw on each address of the policy host and of every MX host, as a table.

Findings only name what is wrong; an operator also wants the plain facts per address (which
TLS version, whose chain, which names, how many days left, what HTTP answer) to compare
addresses and to see that a fix took. Pure: observations and the time in, views out.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.probe.cert_names import matches_host
from mta_sts_policyd.probe.result import ProbeResult
from mta_sts_policyd.tools.check.observations import (
    CertSeen,
    MxAddressSeen,
    MxHostSeen,
    PolicyAddressSeen,
    PolicyHostSeen,
)
from mta_sts_policyd.tools.check.policy_host import days_left

_CHAIN_OF = {
    None: "trusted",
    ResultType.CERTIFICATE_EXPIRED: "expired",
    ResultType.CERTIFICATE_NOT_TRUSTED: "untrusted",
    ResultType.CERTIFICATE_HOST_MISMATCH: "trusted",
}
"""OpenSSL's verdict on chain and dates; names are judged separately (RFC 8461 §4.2)."""


@dataclass(frozen=True)
class TlsView:
    version: str | None = None
    chain: str | None = None
    """`trusted`, `expired`, `untrusted`, or None when no certificate was seen."""
    names: tuple[str, ...] = ()
    names_cover_host: bool | None = None
    not_after: datetime | None = None
    days_left: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "tls_version": self.version,
            "chain": self.chain,
            "cert_names": list(self.names),
            "names_cover_host": self.names_cover_host,
            "not_after": _iso(self.not_after),
            "days_left": self.days_left,
        }


@dataclass(frozen=True)
class PolicyAddressView:
    address: str
    tried: bool
    """False when the address is not public and --allow-private was not given."""
    error: str | None
    """Why no HTTP answer came (connection, TLS handshake, fetch), or None."""
    tls: TlsView
    http_status: int | None = None
    content_type: str | None = None
    size: int | None = None
    """Bytes of the body read (at most the 64 KiB cap plus one)."""
    sha256: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "address": self.address,
            "tried": self.tried,
            "error": self.error,
            **self.tls.to_json(),
            "http_status": self.http_status,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class MxAddressView:
    address: str
    tried: bool
    error: str | None
    """Why the session failed (no connection, no STARTTLS, handshake), or None."""
    starttls: bool | None
    tls: TlsView
    result_type: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "address": self.address,
            "tried": self.tried,
            "error": self.error,
            "starttls": self.starttls,
            **self.tls.to_json(),
            "result_type": self.result_type,
        }


@dataclass(frozen=True)
class HostView:
    """One host name and what each of its addresses showed."""

    host: str
    addresses: tuple[PolicyAddressView, ...] | tuple[MxAddressView, ...]
    error: str | None = None
    """The address lookup failed."""

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "error": self.error,
            "addresses": [a.to_json() for a in self.addresses],
        }


def policy_host_view(seen: PolicyHostSeen, now: datetime) -> HostView:
    shown = sorted(seen.addresses, key=lambda a: address_order(a.address))
    return HostView(seen.host, tuple(_policy(seen.host, a, now) for a in shown), seen.error)


def mx_host_view(seen: MxHostSeen, now: datetime) -> HostView:
    shown = sorted(seen.addresses, key=lambda a: address_order(a.address))
    return HostView(seen.host, tuple(_mx(seen.host, a, now) for a in shown), seen.error)


def address_order(address: str) -> tuple[int, int]:
    """IPv4 before IPv6, numerically: DNS answers come in any order; the report, and which
    address's policy stands for the domain when they differ, do not."""
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


def _policy(host: str, seen: PolicyAddressSeen, now: datetime) -> PolicyAddressView:
    if seen.not_public:
        return PolicyAddressView(seen.address, False, "not public: not contacted", TlsView())
    tls = _cert_view(host, seen.cert, seen.tls_version, now)
    error = seen.connect_error or seen.tls_error or seen.fetch_error
    if seen.status is None:
        return PolicyAddressView(seen.address, True, error or "no answer", tls)
    body = seen.body
    return PolicyAddressView(
        seen.address,
        True,
        None,
        tls,
        http_status=seen.status,
        content_type=seen.headers.get("content-type"),
        size=len(body) if body is not None else None,
        sha256=hashlib.sha256(body).hexdigest() if body is not None else None,
    )


def _cert_view(host: str, cert: CertSeen | None, version: str | None, now: datetime) -> TlsView:
    if cert is None:
        return TlsView(version)
    return TlsView(
        version,
        _CHAIN_OF.get(cert.verify_error, "untrusted"),
        cert.names,
        matches_host(cert.names, host),
        cert.not_after,
        days_left(cert.not_after, now),
    )


def _mx(host: str, seen: MxAddressSeen, now: datetime) -> MxAddressView:
    probe = seen.probe
    if seen.not_public or probe is None:
        return MxAddressView(seen.address, False, "not public: not contacted", None, TlsView())
    if probe.transient:
        return MxAddressView(seen.address, True, probe.reason, None, TlsView())
    kind = probe.result_type
    starttls = kind is not ResultType.STARTTLS_NOT_SUPPORTED
    return MxAddressView(
        seen.address,
        True,
        None if probe.ok else probe.reason,
        starttls,
        _probe_tls(host, probe, now) if starttls else TlsView(),
        str(kind) if kind is not None else None,
    )


def _probe_tls(host: str, probe: ProbeResult, now: datetime) -> TlsView:
    if probe.cert_not_after is None:  # no certificate read (handshake failed before it)
        return TlsView(probe.tls_version)
    return TlsView(
        probe.tls_version,
        _CHAIN_OF.get(probe.result_type),
        probe.cert_names,
        matches_host(probe.cert_names, host),
        probe.cert_not_after,
        days_left(probe.cert_not_after, now),
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None
