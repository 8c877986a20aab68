"""Finding rules for the MX hosts: drift against the policy (RFC 8461 §4.1), STARTTLS and
certificates per address (§4.2, classified as RFC 8460 §4.3 result types), DANE. Pure.

Severity follows the consequence: in `enforce` a compliant sender defers mail to an MX that
fails, so those findings are critical; in `testing` (or without a policy) they are warnings.
"""

from __future__ import annotations

from datetime import datetime

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.probe.result import ProbeResult
from mta_sts_policyd.sts.match import patterns_matching
from mta_sts_policyd.sts.model import Mode, Policy
from mta_sts_policyd.tools.check.findings import Finding, Severity, Where, finding
from mta_sts_policyd.tools.check.observations import MxHostSeen, MxSeen, Options
from mta_sts_policyd.tools.check.policy_host import days_left

_RESULT_CODES = {
    ResultType.STARTTLS_NOT_SUPPORTED: "MX_STARTTLS_MISSING",
    ResultType.CERTIFICATE_HOST_MISMATCH: "MX_CERT_NAME_MISMATCH",
    ResultType.CERTIFICATE_EXPIRED: "MX_CERT_EXPIRED",
    ResultType.CERTIFICATE_NOT_TRUSTED: "MX_CERT_UNTRUSTED",
    ResultType.VALIDATION_FAILURE: "MX_TLS_FAILED",
}


def _severity(policy: Policy | None) -> Severity:
    enforce = policy is not None and policy.mode is Mode.ENFORCE
    return Severity.CRITICAL if enforce else Severity.WARNING


def judge_mx_records(domain: str, mx: MxSeen, policy: Policy | None) -> list[Finding]:
    """The MX RRset itself and its drift from the policy's mx patterns, both ways."""
    if mx.error is not None:
        return [finding("DNS_LOOKUP_FAILED", f"MX {domain}: {mx.error}", name=domain)]
    if mx.nxdomain:
        return [
            finding(
                "DOMAIN_NXDOMAIN",
                f"{domain} does not exist in DNS (NXDOMAIN): nobody can send mail to it",
                name=domain,
            )
        ]
    if mx.null:
        return [finding("MX_NULL", f"{domain} has a null MX (RFC 7505)", name=domain)]
    out = []
    if mx.implicit:
        out.append(
            finding(
                "MX_IMPLICIT",
                f"{domain} has no MX record; senders deliver to {domain} itself",
                name=domain,
            )
        )
    if policy is None or policy.mode is Mode.NONE:
        return out
    for host in mx.hosts:
        if not patterns_matching(policy.mx, host):
            out.append(
                finding(
                    "MX_NOT_COVERED",
                    f"MX host {host} matches none of the mx patterns ({', '.join(policy.mx)})",
                    severity=_severity(policy),
                    mx=host,
                )
            )
    for pattern in dict.fromkeys(policy.mx):
        if not any(patterns_matching([pattern], host) for host in mx.hosts):
            out.append(
                finding(
                    "MX_PATTERN_UNUSED",
                    f"mx pattern {pattern} matches no MX host ({', '.join(mx.hosts) or 'none'})",
                    pattern=pattern,
                )
            )
    return out


def judge_mx_host(
    seen: MxHostSeen, policy: Policy | None, options: Options, now: datetime
) -> list[Finding]:
    """Addresses, STARTTLS and certificate of one MX host, and its TLSA records."""
    if seen.error is not None:
        return [finding("DNS_LOOKUP_FAILED", f"{seen.host}: {seen.error}", mx=seen.host)]
    if not seen.addresses:
        return [
            finding("MX_NO_ADDRESS", f"MX host {seen.host} has no A or AAAA record", mx=seen.host)
        ]
    out = []
    for address in seen.addresses:
        where: Where = {"mx": seen.host, "address": address.address}
        if address.not_public:
            out.append(
                finding(
                    "ADDRESS_NOT_PUBLIC",
                    f"{seen.host} has the non-public address {address.address}; not contacted",
                    **where,
                )
            )
        elif address.probe is not None:
            out += _probe(address.probe, where, policy, options, now)
    if seen.tlsa and seen.tlsa_validated:
        out.append(
            finding(
                "DANE_TLSA_VALIDATED",
                f"_25._tcp.{seen.host} has DNSSEC-validated TLSA records",
                mx=seen.host,
            )
        )
    elif seen.tlsa:
        out.append(
            finding(
                "DANE_TLSA_UNVALIDATED",
                f"_25._tcp.{seen.host} has TLSA records "
                "but the resolver did not validate them (no AD bit)",
                mx=seen.host,
            )
        )
    return out


def _probe(
    probe: ProbeResult,
    where: Where,
    policy: Policy | None,
    options: Options,
    now: datetime,
) -> list[Finding]:
    if probe.transient:
        return [finding("MX_CONNECT_FAILED", probe.reason, **where)]
    out = []
    evidence: Where = {**where, "tls_version": probe.tls_version}
    code = _RESULT_CODES.get(probe.result_type) if probe.result_type else None
    if code is not None and probe.failure_reason_code != "mx-host-not-in-policy":
        out.append(
            finding(
                code,
                f"{probe.result_type}: {probe.reason}",
                severity=_severity(policy),
                **evidence,
                result_type=probe.result_type,
            )
        )
    if probe.cert_not_after is None or code == "MX_CERT_EXPIRED":
        return out
    left = days_left(probe.cert_not_after, now)
    expiry: Where = {"days_left": left, "not_after": probe.cert_not_after.isoformat()}
    if left < 0:  # OpenSSL reports an untrusted chain before the dates
        message = f"certificate of {where['mx']} expired {-left} days ago"
        out.append(
            finding("MX_CERT_EXPIRED", message, severity=_severity(policy), **where, **expiry)
        )
    elif left <= options.mx_cert_warning_days:
        critical = left <= options.mx_cert_critical_days
        severity = _severity(policy) if critical else Severity.WARNING
        message = f"certificate of {where['mx']} expires in {left} days"
        out.append(finding("MX_CERT_EXPIRES", message, severity=severity, **where, **expiry))
    return out
