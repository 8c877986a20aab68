"""The finding model of `check` and `monitor`: stable codes, severities, evidence, one fix each.

Pure: no I/O, no clock. The catalogue below is the single source of every code, its default
severity and its fix sentence; docs/check-findings.md documents the same table and a test keeps
the two in step. Codes are part of the JSON schema: never rename one, add a new one instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any


class Severity(StrEnum):
    """How bad a finding is; `unknown` means "could not check", which is not the same as OK."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"
    UNKNOWN = "unknown"


class NagiosStatus(IntEnum):
    """Exit codes of `check` and `monitor --once` (Nagios plugin convention)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True, slots=True)
class CodeInfo:
    severity: Severity
    title: str
    fix: str


_C, _W, _I, _U = Severity.CRITICAL, Severity.WARNING, Severity.INFO, Severity.UNKNOWN
_ = CodeInfo

CATALOGUE: Mapping[str, CodeInfo] = {
    "CHECK_FAILED": _(_U, "an internal error stopped the check of this domain",
        "Report the error message to the developers; run the check again."),
    # --- the `_mta-sts` TXT record (RFC 8461 §3.1) ---
    "DNS_LOOKUP_FAILED": _(_U, "a DNS query failed (SERVFAIL, REFUSED, timeout)",
        "Make the name's authoritative servers answer; senders treat this as 'no policy'."),
    "TXT_MISSING": _(_C, "no v=STSv1 TXT record at _mta-sts.DOMAIN",
        "Publish one TXT record 'v=STSv1; id=...' at _mta-sts.DOMAIN (see `generate`)."),
    "TXT_MULTIPLE": _(_C, "more than one v=STSv1 TXT record",
        "Delete all but one v=STSv1 record: with several, senders see no policy at all."),
    "TXT_INVALID": _(_C, "the v=STSv1 record does not follow the RFC 8461 §3.1 syntax",
        "Rewrite the record as 'v=STSv1; id=ID' with ID 1-32 letters or digits."),
    "TXT_EXTRA_RECORDS": _(_I, "other TXT records share the _mta-sts name",
        "Nothing to do if they are intended; senders ignore records not starting with v=STSv1."),
    "TXT_EXTENSION": _(_I, "the record carries extension fields senders ignore",
        "Remove fields other than v and id unless a tool of yours reads them."),
    "TXT_CNAME": _(_I, "_mta-sts.DOMAIN is reached through a CNAME chain",
        "Nothing to do if the chain is intended (delegated hosting); it is shown as evidence."),
    "TXT_TTL_HIGH": _(_I, "the TXT record's TTL is over one day",
        "Lower the TTL (e.g. 3600) so that id changes reach senders quickly."),
    "ID_UNEXPECTED": _(_W, "the id differs from --expect-id",
        "Publish the id your hosting provider or `generate` gave you."),
    "HOSTING_CNAME_MISSING": _(_W, "mta-sts/_mta-sts are not CNAMEs to the expected host",
        "Point mta-sts.DOMAIN and/or _mta-sts.DOMAIN at the hosting provider with a CNAME."),
    "HOSTING_ADDRESS_MISMATCH": _(_W, "mta-sts.DOMAIN has addresses other than the policy host's",
        "Point mta-sts.DOMAIN (A/AAAA or CNAME) at the host that serves the policy."),
    # --- the policy host mta-sts.DOMAIN, per address (RFC 8461 §3.2, §3.3) ---
    "ADDRESS_NOT_PUBLIC": _(_U, "an address is private, loopback or link-local; not contacted",
        "Publish public addresses only (or run check with --allow-private on a test network)."),
    "POLICY_HOST_NO_ADDRESS": _(_C, "mta-sts.DOMAIN has no A or AAAA record",
        "Publish an A and/or AAAA record (or a CNAME) for mta-sts.DOMAIN."),
    "POLICY_CONNECT_FAILED": _(_C, "no TCP connection to port 443 of an address",
        "Make the HTTPS server listen on every published address, or remove the address."),
    "POLICY_TLS_FAILED": _(_C, "the TLS handshake failed for another reason than the certificate",
        "Serve TLS 1.2 or later with a certificate for mta-sts.DOMAIN (SNI) on every address."),
    "POLICY_CERT_UNTRUSTED": _(_C, "the policy host's certificate chain is not trusted",
        "Use a certificate from a public CA and send the intermediate certificates too."),
    "POLICY_CERT_NAME_MISMATCH": _(_C, "the policy host's certificate does not name it",
        "Get a certificate whose subjectAltName covers mta-sts.DOMAIN."),
    "POLICY_CERT_EXPIRED": _(_C, "the policy host's certificate has expired",
        "Renew the certificate; until then senders silently stop applying the policy."),
    "POLICY_CERT_EXPIRES": _(_W, "the policy host's certificate expires soon",
        "Renew the certificate (check that automatic renewal works for mta-sts.DOMAIN)."),
    "POLICY_REDIRECT": _(_C, "the policy URL answers with a redirect (never followed)",
        "Serve the file itself with status 200 at /.well-known/mta-sts.txt; no redirects."),
    "POLICY_HTTP_STATUS": _(_C, "the policy URL answers with a status other than 200",
        "Serve the policy file with status 200 at /.well-known/mta-sts.txt."),
    "POLICY_CONTENT_TYPE": _(_C, "the policy is not served as text/plain",
        "Serve the file with 'Content-Type: text/plain' and no Content-Encoding."),
    "POLICY_TOO_LARGE": _(_C, "the policy is larger than 64 KiB",
        "Shorten the policy file: senders stop reading after 64 KiB."),
    "POLICY_FETCH_FAILED": _(_C, "the policy fetch failed (timeout or broken HTTP)",
        "Make the server answer the whole request within a few seconds."),
    "POLICY_SYNTAX": _(_C, "the policy file does not parse",
        "Fix the named line; `generate` prints a valid file."),
    "POLICY_BOM": _(_I, "the policy starts with a UTF-8 byte-order mark",
        "Save the file without a BOM; strict senders may reject it."),
    "POLICY_MIXED_LINE_ENDINGS": _(_I, "the policy mixes CRLF and LF line ends",
        "Use one kind of line end throughout (CRLF is the RFC's form)."),
    "POLICY_DUPLICATE_KEY": _(_W, "a key other than mx appears more than once",
        "Keep one line per key: senders use the first and ignore the rest."),
    "POLICY_UNKNOWN_KEY": _(_I, "the policy has keys RFC 8461 does not define",
        "Remove them unless a tool of yours reads them; senders ignore them."),
    "POLICY_MAX_AGE_RANGE": _(_W, "max_age is above the RFC's limit of 31557600 s",
        "Use at most 31557600; senders clamp larger values."),
    "POLICY_MAX_AGE_SHORT": _(_W, "max_age is under one day in enforce mode",
        "Use a max_age of at least 86400 (RFC 8461 suggests weeks) so that policies survive "
        "an outage of the policy host."),
    "POLICY_ADDRESSES_DIFFER": _(_W, "the policy host's addresses serve different bytes",
        "Serve the same file from every address; senders get one at random."),
    "POLICY_MODE_TESTING": _(_I, "the policy is in testing mode",
        "Switch to enforce once TLS reports show no failures for a few weeks."),
    "POLICY_MODE_NONE": _(_I, "the policy is in mode none",
        "Nothing to do if you are withdrawing MTA-STS; keep it served for max_age."),
    "ID_NOT_BUMPED": _(_C, "the policy changed but the id in DNS did not",
        "Publish the TXT record `generate` prints for the served policy (a new id)."),
    "ID_NOT_VERIFIABLE": _(_I, "the id is not derived from the content; changes not verifiable",
        "Use `generate` to derive ids from the policy content so a forgotten bump is detected."),
    # --- `host status` only: what the policy host itself loads ---
    "HOSTED_POLICY_REFUSED": _(_C, "the policy host refuses the domain's policy file",
        "Fix the file as the message says (`generate` or `publish` write valid ones)."),
    "HOSTED_POLICY_MISSING": _(_C, "the policy host has no policy file for a domain it serves",
        "Write it with `publish` (or `generate --write`); for a domain you retire, remove its "
        "_mta-sts TXT record and its acme_names entry."),
    # --- MX hosts against the policy (RFC 8461 §4.1) ---
    "DOMAIN_NXDOMAIN": _(_C, "the domain does not exist in DNS (NXDOMAIN)",
        "Check the name; if it is yours, publish its delegation (NS) and an MX record. Nothing "
        "else is checked: no name under a domain that does not exist can exist (RFC 8020)."),
    "MX_NULL": _(_I, "the domain publishes a null MX (it accepts no mail)",
        "Nothing to do if the domain receives no mail; an MTA-STS policy is then unnecessary."),
    "MX_IMPLICIT": _(_W, "the domain has no MX record; senders use its own address",
        "Publish an MX record; a policy must then list the domain itself as mx."),
    "MX_NOT_COVERED": _(_C, "an MX host matches no mx pattern of the policy",
        "Add the MX host (or a one-label *. wildcard for it) to the policy and bump the id."),
    "MX_PATTERN_UNUSED": _(_W, "a policy mx pattern matches no MX host",
        "Remove the stale pattern (and bump the id), or publish the MX it was meant for."),
    "MX_NO_ADDRESS": _(_C, "an MX host has no A or AAAA record",
        "Publish addresses for the MX host or remove it from the MX record."),
    "MX_CONNECT_FAILED": _(_U, "no SMTP session with an MX address (port 25 may be filtered here)",
        "Check from a network that may connect to port 25; make the MX listen on every address."),
    "MX_STARTTLS_MISSING": _(_C, "an MX does not offer STARTTLS",
        "Enable STARTTLS on the MX (e.g. smtpd_tls_security_level = may)."),
    "MX_CERT_UNTRUSTED": _(_C, "an MX certificate chain is not trusted",
        "Use a certificate from a public CA and send the intermediate certificates too."),
    "MX_CERT_NAME_MISMATCH": _(_C, "an MX certificate does not name the MX host",
        "Get a certificate whose subjectAltName covers the MX host name as in the MX record."),
    "MX_CERT_EXPIRED": _(_C, "an MX certificate has expired",
        "Renew the certificate; compliant senders defer mail to this MX until then."),
    "MX_CERT_EXPIRES": _(_W, "an MX certificate expires soon",
        "Renew the certificate before it expires (check automatic renewal)."),
    "MX_TLS_FAILED": _(_C, "the STARTTLS handshake with an MX failed",
        "Offer TLS 1.2 or later with a certificate for the MX host name."),
    "DANE_TLSA_VALIDATED": _(_I, "an MX has DNSSEC-validated TLSA records",
        "Nothing to do: DANE-capable senders use DANE instead of MTA-STS (RFC 8461 §2)."),
    "DANE_TLSA_UNVALIDATED": _(_W, "an MX has TLSA records the resolver did not validate",
        "Sign the zone with DNSSEC (or remove the TLSA records): unsigned TLSA is unusable."),
    # --- TLS reporting (RFC 8460 §3) ---
    "TLSRPT_MISSING": _(_W, "no TLS-RPT record at _smtp._tls.DOMAIN",
        "Publish 'v=TLSRPTv1; rua=mailto:...' so senders tell you what fails."),
    "TLSRPT_MULTIPLE": _(_W, "more than one v=TLSRPTv1 record",
        "Keep exactly one v=TLSRPTv1 record; with several, no reports are sent."),
    "TLSRPT_INVALID": _(_W, "the TLS-RPT record does not follow the RFC 8460 syntax",
        "Rewrite it as 'v=TLSRPTv1; rua=mailto:reports@example.com'."),
    "TLSRPT_RUA_UNSUPPORTED": _(_W, "a rua URI is neither a usable mailto: nor https:",
        "Use mailto: or https: URIs only."),
    "TLSRPT_MAILTO_NO_MX": _(_W, "a rua mailto: domain cannot receive mail",
        "Use an address whose domain has an MX (or address) record."),
    "TLSRPT_HTTPS_FAILED": _(_W, "a rua https: endpoint failed the TLS check",
        "Give the report endpoint a trusted certificate for its name."),
}  # fmt: skip
"""Every code `check` can produce. Never rename or reuse a code: monitoring keys on them."""

del _


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or notable fact) about a domain, with what was seen and where."""

    code: str
    severity: Severity
    message: str
    """What was seen, one sentence, naming the values involved."""
    evidence: tuple[tuple[str, str], ...] = ()
    """Where: `name`, `address`, `line`, `seen`, ... in a fixed order, values as text."""

    @property
    def fix(self) -> str:
        return CATALOGUE[self.code].fix

    @property
    def key(self) -> tuple[str, str]:
        """Identity across runs (monitor transitions): the code and where it was seen."""
        return self.code, "|".join(f"{k}={v}" for k, v in self.evidence if k in _WHERE_KEYS)

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": str(self.severity),
            "message": self.message,
            "evidence": dict(self.evidence),
            "fix": self.fix,
        }


Where = dict[str, Any]
"""Evidence handed on to `finding(**where)` (Any: its keys never clash with `severity`)."""

_WHERE_KEYS = frozenset({"name", "address", "mx", "pattern", "uri", "line"})
"""Evidence keys that say where (the rest, e.g. days left, may change without a new finding)."""


def finding(
    code: str, message: str, *, severity: Severity | None = None, **evidence: object
) -> Finding:
    """A finding of a catalogued code; `severity` overrides the default (mode-dependent codes)."""
    info = CATALOGUE[code]  # KeyError for an uncatalogued code: a bug, caught by the tests
    return Finding(
        code=code,
        severity=severity or info.severity,
        message=message,
        evidence=tuple((k, str(v)) for k, v in evidence.items() if v is not None),
    )


_ORDER = {Severity.CRITICAL: 0, Severity.UNKNOWN: 1, Severity.WARNING: 2, Severity.INFO: 3}


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first, then by code and evidence: the same findings always print the same way."""
    return sorted(findings, key=lambda f: (_ORDER[f.severity], f.code, f.evidence))


def status_of(findings: Iterable[Finding]) -> NagiosStatus:
    """CRITICAL if any finding is critical; else UNKNOWN if something could not be checked;
    else WARNING if any warning; else OK (info findings never change the status).

    A certain critical outranks "could not check", which outranks a warning: an unchecked part
    might hide something worse than the warning.
    """
    severities = {f.severity for f in findings}
    if Severity.CRITICAL in severities:
        return NagiosStatus.CRITICAL
    if Severity.UNKNOWN in severities:
        return NagiosStatus.UNKNOWN
    if Severity.WARNING in severities:
        return NagiosStatus.WARNING
    return NagiosStatus.OK


def worst_status(statuses: Iterable[NagiosStatus]) -> NagiosStatus:
    """The overall status of several domains, by the same precedence as `status_of`."""
    ranked = sorted(statuses, key=_STATUS_RANK.__getitem__)
    return ranked[0] if ranked else NagiosStatus.OK


_STATUS_RANK = {
    NagiosStatus.CRITICAL: 0,
    NagiosStatus.UNKNOWN: 1,
    NagiosStatus.WARNING: 2,
    NagiosStatus.OK: 3,
}
