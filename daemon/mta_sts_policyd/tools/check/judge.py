"""All finding rules for one domain, and "what a sender concludes". Pure: observations and the
time in, a DomainReport out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.postfix.policy_reply import render_policy_reply
from mta_sts_policyd.sts.match import patterns_matching
from mta_sts_policyd.sts.model import Mode, Policy, TxtRecord
from mta_sts_policyd.tools.check.addresses import HostView, mx_host_view, policy_host_view
from mta_sts_policyd.tools.check.findings import (
    Finding,
    NagiosStatus,
    sort_findings,
    status_of,
)
from mta_sts_policyd.tools.check.mx import judge_mx_host, judge_mx_records
from mta_sts_policyd.tools.check.observations import DomainSeen, Options
from mta_sts_policyd.tools.check.policy_host import (
    Served,
    days_left,
    judge_policy,
    judge_policy_host,
)
from mta_sts_policyd.tools.check.tlsrpt import judge_tlsrpt
from mta_sts_policyd.tools.check.txt import judge_hosting, judge_txt

_WEBPKI = ("POLICY_CERT_", "POLICY_TLS_FAILED")
_INVALID = ("POLICY_CONTENT_TYPE", "POLICY_SYNTAX")


@dataclass(frozen=True)
class SenderView:
    """The socketmap answer this daemon would give Postfix, and the RFC 8460 result types a
    sender's report would carry for this domain."""

    socketmap_reply: str
    result_types: tuple[str, ...]
    dane: bool


@dataclass(frozen=True)
class DomainReport:
    domain: str
    findings: tuple[Finding, ...]
    status: NagiosStatus
    policy: Policy | None
    policy_id: str | None
    mx_hosts: tuple[str, ...]
    sender: SenderView
    certificates: tuple[tuple[str, str, int], ...] = ()
    """(kind `policy_host` or `mx`, host, days left): the soonest expiry over its addresses."""
    policy_host: HostView | None = None
    mx_servers: tuple[HostView, ...] = ()
    """Per address of the policy host and of each MX host: what was seen, findings or not."""

    def to_json(self) -> dict[str, object]:
        policy = None
        if self.policy is not None:
            policy = {
                "mode": str(self.policy.mode),
                "max_age": self.policy.max_age,
                "mx": list(self.policy.mx),
            }
        return {
            "domain": self.domain,
            "status": self.status.name,
            "exit_code": int(self.status),
            "txt_id": self.policy_id,
            "policy": policy,
            "mx_hosts": list(self.mx_hosts),
            "sender": {
                "socketmap_reply": self.sender.socketmap_reply,
                "tlsrpt_result_types": list(self.sender.result_types),
                "dane": self.sender.dane,
            },
            "certificates": [
                {"kind": kind, "host": host, "days_left": days}
                for kind, host, days in self.certificates
            ],
            "policy_host": self.policy_host.to_json() if self.policy_host else None,
            "mx_servers": [h.to_json() for h in self.mx_servers],
            "findings": [f.to_json() for f in self.findings],
        }


def judge_domain(seen: DomainSeen, options: Options, now: datetime) -> DomainReport:
    record = seen.txt.result if isinstance(seen.txt.result, TxtRecord) else None
    findings: list[Finding] = []
    if seen.mx.nxdomain:  # the one finding (judge_mx_records); the others would restate it
        seen = replace(seen, policy_host=None, mx_hosts=(), tlsrpt=None)
        record = None
    else:
        findings = judge_txt(seen.txt, options) + judge_hosting(seen, options)
    served: list[Served] = []
    if seen.policy_host is not None:
        host_findings, served = judge_policy_host(seen.policy_host, options, now)
        findings += host_findings + judge_policy(served, record, seen.policy_host.host)
    policy = served[0].policy if served and record is not None else None
    findings += judge_mx_records(seen.domain, seen.mx, policy)
    for host in seen.mx_hosts:
        findings += judge_mx_host(host, policy, options, now)
    if seen.tlsrpt is not None:
        findings += judge_tlsrpt(seen.tlsrpt, policy)
    ordered = tuple(sort_findings(findings))
    return DomainReport(
        domain=seen.domain,
        findings=ordered,
        status=status_of(ordered),
        policy=policy,
        policy_id=record.id if record else None,
        mx_hosts=seen.mx.hosts,
        sender=_sender(seen, record, policy, ordered),
        certificates=_certificates(seen, now),
        policy_host=policy_host_view(seen.policy_host, now) if seen.policy_host else None,
        mx_servers=tuple(mx_host_view(h, now) for h in seen.mx_hosts),
    )


def _certificates(seen: DomainSeen, now: datetime) -> tuple[tuple[str, str, int], ...]:
    soonest: dict[tuple[str, str], int] = {}

    def note(kind: str, host: str, not_after: datetime | None) -> None:
        if not_after is not None:
            left = days_left(not_after, now)
            soonest[(kind, host)] = min(left, soonest.get((kind, host), left))

    if seen.policy_host is not None:
        for address in seen.policy_host.addresses:
            if address.cert is not None:
                note("policy_host", seen.policy_host.host, address.cert.not_after)
    for host in seen.mx_hosts:
        for mx_address in host.addresses:
            if mx_address.probe is not None:
                note("mx", host.host, mx_address.probe.cert_not_after)
    return tuple((kind, host, days) for (kind, host), days in sorted(soonest.items()))


def _sender(
    seen: DomainSeen, record: TxtRecord | None, policy: Policy | None, found: tuple[Finding, ...]
) -> SenderView:
    dane = any(h.tlsa and h.tlsa_validated for h in seen.mx_hosts)
    if record is None:
        return SenderView("NOTFOUND ", (), dane)
    if policy is None:
        return SenderView("NOTFOUND ", _fetch_result_types(seen, found), dane)
    reply = render_policy_reply(
        policy, seen.domain, sts_attributes=False, mx_hosts=seen.mx.hosts or None
    )
    types: dict[str, None] = {}
    if policy.mode is not Mode.NONE:
        if any(not patterns_matching(policy.mx, h) for h in seen.mx.hosts):
            types[ResultType.VALIDATION_FAILURE.value] = None
        for host in seen.mx_hosts:
            for address in host.addresses:
                probe = address.probe
                if probe is not None and probe.result_type is not None:
                    types[probe.result_type.value] = None
    return SenderView(reply.decode("utf-8", "replace"), tuple(sorted(types)), dane)


def _fetch_result_types(seen: DomainSeen, found: tuple[Finding, ...]) -> tuple[str, ...]:
    """How senders' reports would classify the failed fetch: one result type per address.

    A sender picks any of the policy host's addresses (DNS order varies, happy eyeballs
    races them), so when the addresses fail differently every classification is possible.
    """
    addresses = seen.policy_host.addresses if seen.policy_host else ()
    types = {_result_type_at(a.address, found) for a in addresses} or {_result_type_at(None, found)}
    return tuple(sorted(types))


def _result_type_at(address: str | None, found: tuple[Finding, ...]) -> str:
    codes = [f.code for f in found if dict(f.evidence).get("address") == address]
    if any(c.startswith(_WEBPKI) for c in codes):
        return ResultType.STS_WEBPKI_INVALID.value
    if any(c in _INVALID for c in codes):
        return ResultType.STS_POLICY_INVALID.value
    return ResultType.STS_POLICY_FETCH_ERROR.value
