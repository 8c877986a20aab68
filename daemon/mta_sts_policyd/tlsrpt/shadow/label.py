"""Pure steps of the testing-mode shadow: which probe verdict a session gets, and the new event.

No I/O and no clock: `shadow.py` owns the state and the probes and calls these.

Rule for a session that names no MX host (libtlsrpt success datagrams and successful log
sessions carry none): Postfix tries MX hosts in preference order, so the session most likely
went to the most preferred MX host the probe could reach. MX hosts are walked in preference
order; one not yet probed makes the verdict unknown (the event stays as it was), one the probe
could not reach (transient) is skipped, the first judged one decides. When every MX passed this
is a success; when the primary fails it is that failure. Equal-preference MX hosts (which
Postfix shuffles) count in the order DNS returned them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.probe.result import ProbeResult, apply_patterns
from mta_sts_policyd.sts.model import Policy
from mta_sts_policyd.sts.names import host_name
from mta_sts_policyd.tlsrpt.model import FailureDetail, PolicyRef, PolicyType, SessionEvent


@dataclass(frozen=True, slots=True)
class TestingState:
    """What the shadow knows about one testing-mode domain; replaced, never mutated.

    Immutable so that the TLS-RPT collector's thread can read it while the event loop swaps
    in a new one.
    """

    __test__ = False  # not a pytest test class despite the name

    source: Policy
    """The policy object this state was built from (identity decides "changed")."""
    policy: PolicyRef
    expires_at: float
    next_round: float
    mx_hosts: tuple[str, ...] = ()
    """From the last MX lookup, most preferred first."""
    raw: Mapping[str, ProbeResult] = field(default_factory=dict)
    """Network verdicts per MX host (before the policy's patterns)."""
    verdicts: Mapping[str, ProbeResult] = field(default_factory=dict)
    """`raw` with the policy's `mx` patterns applied (RFC 8461 §4.1)."""


def sts_ref(domain: str, policy: Policy) -> PolicyRef:
    """The RFC 8460 `policy` object of an STS policy (§4.4: policy strings, mx patterns)."""
    return PolicyRef(PolicyType.STS, domain, policy.lines, policy.mx)


def event_mx(event: SessionEvent) -> str | None:
    """The MX host the session talked to, if the event names one (failure details only)."""
    for detail in event.failures:
        host = safe_host(detail.receiving_mx_hostname)
        if host is not None:
            return host
    return None


def safe_host(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return host_name(name)
    except ValueError:
        return None


def judged(result: ProbeResult | None) -> ProbeResult | None:
    """The verdict if it is one (a pass or a reportable failure), None when unknown/transient."""
    return None if result is None or result.transient else result


def unnamed_verdict(state: TestingState) -> ProbeResult | None:
    """The verdict for a session that names no MX host (module docstring)."""
    for host in state.mx_hosts:
        result = state.verdicts.get(host)
        if result is None:
            return None
        if not result.transient:
            return result
    return None


def probe_label(result: ProbeResult) -> str:
    """The `result` label of metrics.PROBES for a network verdict."""
    if result.ok:
        return "success"
    return "transient" if result.result_type is None else result.result_type.value


def as_sts(event: SessionEvent, policy: PolicyRef, verdict: ProbeResult) -> SessionEvent:
    """Relabel a no-policy-found session with the testing policy and the probe's verdict.

    An MX host that passed keeps the session's own outcome (a session that failed, e.g. no
    STARTTLS that time, stays a failure); one that failed makes it a failure with the probe's
    result type, because enforce would have refused it.
    """
    if verdict.ok:
        return replace(event, policy=policy)
    detail = probe_detail(verdict, event)
    return replace(event, policy=policy, success=False, failures=(detail,))


def testing_session(
    event: SessionEvent, state: TestingState, cached: Callable[[str], ProbeResult | None]
) -> SessionEvent | None:
    """A testing domain's no-policy-found session as an `sts` session with its MX's verdict,
    or None while no verdict decides it. `cached` is the prober's cache, for an MX outside the
    last lookup (the MX set changed)."""
    if state.expires_at <= event.timestamp:
        return None
    mx = event_mx(event)
    if mx is None:
        verdict = unnamed_verdict(state)
    elif mx in state.verdicts:
        verdict = judged(state.verdicts[mx])
    else:
        seen = cached(mx)
        verdict = judged(apply_patterns(seen, state.policy.mx_hosts) if seen else None)
    return None if verdict is None else as_sts(event, state.policy, verdict)


def probe_failure_detail(
    verdict: ProbeResult, sending_mta_ip: str | None = None
) -> FailureDetail | None:
    """The RFC 8460 `failure-details` key of a reportable probe failure, else None."""
    if verdict.ok or verdict.result_type is None:
        return None
    return FailureDetail(
        result_type=verdict.result_type,
        sending_mta_ip=sending_mta_ip,
        receiving_mx_hostname=verdict.mx_host,
        receiving_mx_helo=verdict.receiving_helo,
        receiving_ip=verdict.address,
        failure_reason_code=verdict.failure_reason_code,
    )


def probe_detail(verdict: ProbeResult, event: SessionEvent) -> FailureDetail:
    """The probe's failure detail, with the addresses the session itself reported for that MX."""
    detail = probe_failure_detail(verdict)
    assert detail is not None, "probe_detail needs a reportable failure"
    for own in event.failures:
        if safe_host(own.receiving_mx_hostname) == verdict.mx_host:
            return replace(
                detail,
                sending_mta_ip=own.sending_mta_ip,
                receiving_ip=own.receiving_ip or detail.receiving_ip,
                receiving_mx_helo=own.receiving_mx_helo or detail.receiving_mx_helo,
            )
    return detail


def refinable(detail: FailureDetail) -> str | None:
    """The MX host of a generic `validation-failure` detail a probe could make precise."""
    if detail.result_type is not ResultType.VALIDATION_FAILURE:
        return None
    return safe_host(detail.receiving_mx_hostname)


def refine_detail(detail: FailureDetail, verdict: ProbeResult | None) -> FailureDetail:
    """Replace a generic result type by the probe's precise one (only a certificate/STARTTLS
    failure is more precise than `validation-failure`; a pass tells nothing about the session)."""
    if verdict is None or verdict.ok or verdict.result_type is None:
        return detail
    if verdict.result_type is ResultType.VALIDATION_FAILURE:
        return detail
    return replace(
        detail,
        result_type=verdict.result_type,
        failure_reason_code=verdict.failure_reason_code or detail.failure_reason_code,
    )


def with_results(
    state: TestingState, mx_hosts: tuple[str, ...], raw: Mapping[str, ProbeResult]
) -> TestingState:
    """`state` with new network verdicts, judged against its policy's patterns."""
    patterns = state.policy.mx_hosts
    verdicts = {host: apply_patterns(result, patterns) for host, result in raw.items()}
    return replace(state, mx_hosts=mx_hosts, raw=dict(raw), verdicts=verdicts)
