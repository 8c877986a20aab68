"""What `check` saw on the network, as plain values: the input of the pure finding rules.

gather_*.py fill these in (I/O); txt.py, policy_host.py, mx.py, tlsrpt.py and sender.py turn
them into findings without I/O, so every rule is tested with hand-made observations as well as
against real loopback servers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.probe.result import ProbeResult
from mta_sts_policyd.sts.model import TxtResult


@dataclass(frozen=True)
class Options:
    """The knobs of one check run that change findings (not how the network is reached)."""

    allow_private: bool = False
    mx_cert_warning_days: int = 21
    mx_cert_critical_days: int = 7
    policy_cert_warning_days: int = 21
    policy_cert_critical_days: int = 7
    expect_cname: tuple[str, ...] = ()
    expect_id: str | None = None


@dataclass(frozen=True)
class TxtSeen:
    name: str
    result: TxtResult | None
    """None when the lookup failed (`error`)."""
    records: tuple[str, ...] = ()
    """Every TXT record at the name, strings joined."""
    chain: tuple[tuple[str, str], ...] = ()
    ttl: int = 0
    error: str | None = None


@dataclass(frozen=True)
class CertSeen:
    names: tuple[str, ...]
    not_after: datetime
    verify_error: ResultType | None = None
    """certificate-expired / certificate-not-trusted as OpenSSL decided (chain and dates)."""
    verify_reason: str | None = None


@dataclass(frozen=True)
class PolicyAddressSeen:
    """One address of the policy host: the TLS inspection and the HTTP exchange."""

    address: str
    not_public: bool = False
    connect_error: str | None = None
    tls_error: str | None = None
    """A handshake failure that is not about the certificate (alert, protocol version)."""
    cert: CertSeen | None = None
    tls_version: str | None = None
    fetch_error: str | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    oversize: bool = False


@dataclass(frozen=True)
class PolicyHostSeen:
    host: str
    chain: tuple[tuple[str, str], ...] = ()
    addresses: tuple[PolicyAddressSeen, ...] = ()
    error: str | None = None
    """The address lookup failed."""


@dataclass(frozen=True)
class MxAddressSeen:
    address: str
    not_public: bool = False
    probe: ProbeResult | None = None


@dataclass(frozen=True)
class MxHostSeen:
    host: str
    addresses: tuple[MxAddressSeen, ...] = ()
    error: str | None = None
    tlsa: bool = False
    """TLSA records exist at _25._tcp.HOST."""
    tlsa_validated: bool = False
    """... and the resolver set the AD bit for them."""


@dataclass(frozen=True)
class MxSeen:
    hosts: tuple[str, ...] = ()
    """By preference; for an implicit MX, the domain itself."""
    null: bool = False
    implicit: bool = False
    nxdomain: bool = False
    """The domain itself does not exist: nothing under it can (RFC 8020)."""
    error: str | None = None

    @property
    def unknown_because(self) -> str | None:
        """Why the MX hosts are not known (None: `hosts` is the answer), for `generate` and
        `publish`, which then need --mx."""
        if self.error is not None:
            return f"the MX lookup failed ({self.error})"
        if self.nxdomain:
            return "the domain does not exist in DNS (NXDOMAIN)"
        return None

    @property
    def known_hosts(self) -> tuple[str, ...] | None:
        """`hosts`, or None when they are not known (`unknown_because` says why)."""
        return self.hosts if self.unknown_because is None else None


@dataclass(frozen=True)
class EndpointProblem:
    """Why a TLS-RPT https: endpoint failed its TLS check, at one address (None: the name)."""

    address: str | None
    problem: str
    not_public: bool = False


@dataclass(frozen=True)
class TlsRptSeen:
    name: str
    records: tuple[str, ...] = ()
    """Only the v=TLSRPTv1 candidates."""
    error: str | None = None
    mailto_domains: dict[str, str | None] = field(default_factory=dict)
    """Domain of each mailto: address -> why it cannot receive mail, or None when it can."""
    https: dict[str, tuple[EndpointProblem, ...]] = field(default_factory=dict)
    """Each https: endpoint -> what its TLS check found wrong, per address (empty: nothing)."""


@dataclass(frozen=True)
class DomainSeen:
    domain: str
    txt: TxtSeen
    policy_host: PolicyHostSeen | None = None
    mx: MxSeen = field(default_factory=MxSeen)
    mx_hosts: tuple[MxHostSeen, ...] = ()
    tlsrpt: TlsRptSeen | None = None
    cname_targets: tuple[str, ...] = ()
    """Every CNAME target on the way from mta-sts.DOMAIN and _mta-sts.DOMAIN."""
