"""The pure half of `host status`: findings about one served domain, with `check`'s codes and
severities (tools/check/findings.py), so monitoring keys on the same names.

- delegation: `mta-sts.D` must reach this host, through a CNAME to one of `expect_cname` or
  with only addresses in `expect_addresses` (HOSTING_CNAME_MISSING, HOSTING_ADDRESS_MISMATCH);
  with neither configured the addresses are shown, not judged;
- the TXT record (check's TXT rules) must carry the id of the policy being served: ids made
  by `generate` are derived from the content (tools/policy_id.py), so a stale one is
  ID_NOT_BUMPED; any other id is shown and ID_NOT_VERIFIABLE says it cannot be checked;
- the certificate the host would present: none is POLICY_TLS_FAILED (senders get an alert,
  and the message says why the file here was refused), an expired one POLICY_CERT_EXPIRED
  with the moment (whether the host still presents it or, restarted since, none at all),
  expiry by check's thresholds (POLICY_CERT_EXPIRES);
- a domain the host should serve but does not: its file refused (HOSTED_POLICY_REFUSED), or
  no file for a domain that acme_names lists or whose `_mta-sts` record senders see
  (HOSTED_POLICY_MISSING). Monitoring must see these, not lose them from the list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from mta_sts_policyd.sts.model import Policy, TxtAbsent, TxtRecord
from mta_sts_policyd.sts.policy import parse_policy
from mta_sts_policyd.tools.check.findings import (
    Finding,
    NagiosStatus,
    Severity,
    finding,
    sort_findings,
)
from mta_sts_policyd.tools.check.findings import status_of as nagios_status
from mta_sts_policyd.tools.check.observations import CertSeen, Options, TxtSeen
from mta_sts_policyd.tools.check.policy_host import cert_findings, days_left, policy_thresholds
from mta_sts_policyd.tools.check.txt import judge_txt
from mta_sts_policyd.tools.policy_id import IdVerdict, judge_id, policy_id


@dataclass(frozen=True)
class CertRefused:
    """Why the host does not use the certificate file it has for mta-sts.D."""

    file: str
    reason: str
    expired_at: datetime | None = None


@dataclass(frozen=True)
class HostedSeen:
    """One domain of the host: policy bytes, DNS of `mta-sts.D` and `_mta-sts.D`, certificate."""

    domain: str
    body: bytes | None
    """The policy served; None: none (its file refused or missing)."""
    addresses: tuple[str, ...]
    chain: tuple[tuple[str, str], ...]
    """CNAME steps from mta-sts.D (and _mta-sts.D) to the answer."""
    address_error: str | None
    txt: TxtSeen
    validity: tuple[datetime, datetime] | None
    """The usable certificate's not-before and not-after; None: the host has none."""
    refused: str | None = None
    """Why the host refuses the domain's policy file; None: it takes it (or there is none)."""
    policy_file: str = ""
    listed: bool = False
    """`[host] acme_names` lists mta-sts.D: the host is meant to serve it."""
    cert_refused: CertRefused | None = None
    """The certificate file here that the host refuses (None: none, or one is in use)."""


@dataclass(frozen=True)
class Expectations:
    """How `mta-sts.D` reaches this host (`[host] expect_addresses` / `expect_cname`)."""

    addresses: frozenset[str] = frozenset()
    cnames: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HostedReport:
    domain: str
    served_id: str | None
    txt_id: str | None
    id_verdict: str
    addresses: tuple[str, ...]
    delegation: str
    """verified / not-verified (nothing configured) / mismatch / no-address / unknown (DNS
    failed)."""
    cert_days_left: int | None
    findings: tuple[Finding, ...]
    policy: str = "served"
    """served / last-good (its file refused, the earlier one served) / refused / missing."""
    cert_expired_at: datetime | None = None

    @property
    def status(self) -> NagiosStatus:
        return nagios_status(self.findings)

    def to_json(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "status": self.status.name,
            "policy": self.policy,
            "served_id": self.served_id,
            "txt_id": self.txt_id,
            "id": self.id_verdict,
            "addresses": list(self.addresses),
            "delegation": self.delegation,
            "certificate_days_left": self.cert_days_left,
            "certificate_expired_at": self.cert_expired_at and utc_text(self.cert_expired_at),
            "findings": [f.to_json() for f in self.findings],
        }


def judge_all(
    seen: Iterable[HostedSeen], expect: Expectations, options: Options, now: datetime
) -> list[HostedReport]:
    """The reports of `host status` (and of the host's gauges): every domain that is served,
    refused, or expected (`reported`)."""
    return [judge_hosted(s, expect, options, now) for s in seen if reported(s)]


def reported(seen: HostedSeen) -> bool:
    """Served or refused domains always; one without any policy file (a certificate left
    here, or served earlier) only while acme_names lists it or `_mta-sts.D` is not known to
    be absent: with neither, the domain is retired, not broken."""
    if seen.body is not None or seen.refused is not None or seen.listed:
        return True
    return not isinstance(seen.txt.result, TxtAbsent)


def judge_hosted(
    seen: HostedSeen, expect: Expectations, options: Options, now: datetime
) -> HostedReport:
    policy = parse_policy(seen.body) if seen.body is not None else None  # only files that parse
    state, found = _policy(seen)
    delegation, where = _delegation(seen, expect)
    found += where + judge_txt(seen.txt, options)
    record = seen.txt.result if isinstance(seen.txt.result, TxtRecord) else None
    verdict, id_findings = _id(seen, record, policy)
    cert, left, expired_at = _certificate(seen, options, now)
    return HostedReport(
        domain=seen.domain,
        served_id=policy_id(policy) if policy is not None else None,
        txt_id=record.id if record else None,
        id_verdict=verdict,
        addresses=seen.addresses,
        delegation=delegation,
        cert_days_left=left,
        findings=tuple(sort_findings([*found, *id_findings, *cert])),
        policy=state,
        cert_expired_at=expired_at,
    )


def _policy(seen: HostedSeen) -> tuple[str, list[Finding]]:
    """Is a policy served, and if not, why that matters."""
    name, file = seen.domain, seen.policy_file
    if seen.refused is not None:
        kept = "it keeps serving the last good version until it restarts"
        if seen.body is None:
            kept = f"no policy is served for {name} unless a host running since before still has it"
        message = f"the host refuses {file}: {seen.refused}; {kept}"
        state = "last-good" if seen.body is not None else "refused"
        return state, [finding("HOSTED_POLICY_REFUSED", message, name=name, file=file)]
    if seen.body is not None:
        return "served", []
    severity = None
    why = f"acme_names lists mta-sts.{name}"
    if not seen.listed:
        why = f"_mta-sts.{name} has a record: senders fetch the policy and get 404"
        if seen.txt.result is None:
            why, severity = f"whether _mta-sts.{name} has a record is not known", Severity.UNKNOWN
    message = f"no policy is served for {name}: {file} does not exist ({why})"
    found = finding("HOSTED_POLICY_MISSING", message, severity=severity, name=name, file=file)
    return "missing", [found]


def _delegation(seen: HostedSeen, expect: Expectations) -> tuple[str, list[Finding]]:
    host = f"mta-sts.{seen.domain}"
    if seen.address_error is not None:
        return "unknown", [finding("DNS_LOOKUP_FAILED", f"{host}: {seen.address_error}", name=host)]
    if not seen.addresses:
        return "no-address", [
            finding("POLICY_HOST_NO_ADDRESS", f"{host} has no A or AAAA record", name=host)
        ]
    if not expect.addresses and not expect.cnames:
        return "not-verified", []
    targets = {t.rstrip(".").lower() for _, t in seen.chain}
    if expect.cnames and targets & expect.cnames:
        return "verified", []
    if expect.addresses and set(seen.addresses) <= expect.addresses:
        return "verified", []
    out = []
    if expect.cnames:
        shown = ", ".join(sorted(targets)) or "none"
        message = f"{host} is not a CNAME to {', '.join(sorted(expect.cnames))} (targets: {shown})"
        out.append(finding("HOSTING_CNAME_MISSING", message, name=host, seen=shown))
    if expect.addresses:
        other = sorted(set(seen.addresses) - expect.addresses)
        message = f"{host} resolves to {', '.join(other)}, not to this host"
        out.append(finding("HOSTING_ADDRESS_MISMATCH", message, name=host, seen=", ".join(other)))
    return "mismatch", out


def _id(
    seen: HostedSeen, record: TxtRecord | None, policy: Policy | None
) -> tuple[str, list[Finding]]:
    if record is None:  # judge_txt said why
        return ("unknown" if seen.txt.error is not None else "no-record"), []
    if policy is None:  # _policy said why
        return "no-policy", []
    name = f"_mta-sts.{seen.domain}"
    verdict = judge_id(record.id, policy)
    if verdict is IdVerdict.NOT_BUMPED:
        message = f"id {record.id} is not the served policy's id {policy_id(policy)}"
        return str(verdict), [
            finding("ID_NOT_BUMPED", message, name=name, seen=record.id, expected=policy_id(policy))
        ]
    if verdict is IdVerdict.NOT_VERIFIABLE:
        message = f"id {record.id} is not derived from the policy content (`generate` ids are)"
        return str(verdict), [finding("ID_NOT_VERIFIABLE", message, name=name, seen=record.id)]
    return str(verdict), []


def _certificate(
    seen: HostedSeen, options: Options, now: datetime
) -> tuple[list[Finding], int | None, datetime | None]:
    """Findings, days left and, once it has passed, the moment the certificate expired."""
    host = f"mta-sts.{seen.domain}"
    refused = seen.cert_refused
    if seen.validity is None and refused is not None and refused.expired_at is not None:
        at = refused.expired_at
        message = f"the certificate for {host} expired at {utc_text(at)} ({refused.file})"
        expired = finding("POLICY_CERT_EXPIRED", message, name=host, not_after=utc_text(at))
        return [expired], days_left(at, now), at
    if seen.validity is None:
        why = f" ({refused.file}: {refused.reason})" if refused is not None else ""
        message = f"the host has no usable certificate for {host}{why}: senders get a TLS alert"
        return [finding("POLICY_TLS_FAILED", message, name=host)], None, None
    not_after = seen.validity[1]
    if not_after <= now:
        message = f"the certificate for {host} expired at {utc_text(not_after)}"
        expired = finding("POLICY_CERT_EXPIRED", message, name=host, not_after=utc_text(not_after))
        return [expired], days_left(not_after, now), not_after
    cert = CertSeen(names=(host,), not_after=not_after)
    where = {"name": host}
    found = cert_findings(cert, host, where, now, policy_thresholds(options), "POLICY")
    return found, days_left(not_after, now), None


def utc_text(moment: datetime) -> str:
    """`2026-12-03T10:00:00Z`: how the host status output gives a moment."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
