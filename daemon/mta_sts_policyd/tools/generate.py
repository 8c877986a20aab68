"""`generate`: a policy file and its TXT record, with the id derived from the content (pure).

The command line (cli/generate.py) looks up the current MX hosts and reads/writes files; this
module decides what to print and what to refuse, so every rule is tested without I/O. `publish`
reviews its file by the same rules (`review`), whether built from options or edited by hand.

Two kinds of refusal, each with its own override, so one never passes the other:
- MX coverage: an `enforce` policy that leaves a current MX host uncovered (compliant senders
  would defer its mail). Only naming the host, `--uncovered-mx HOST`, lets it stay uncovered,
  and it is then still warned about.
- missing evidence: the switch to `enforce` waits for the TLS reports (`enforce_refusals`),
  and an `enforce` policy waits for the MX lookup that checks its coverage (DNS failed, or a
  set-up without DNS); `--force` goes ahead without them. A host known to be left uncovered is
  not missing evidence, so `--force` never passes it.
Usage errors (PolicySyntaxError): a file larger than senders read, an invalid pattern or
max_age. Warnings: `enforce` with max_age under a day; `none` (withdrawal) with the time
senders may still apply the old policy.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from mta_sts_policyd.discovery.http_rules import size_problem
from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.reports_in.readiness import Verdict
from mta_sts_policyd.sts.match import patterns_matching
from mta_sts_policyd.sts.model import MAX_AGE_LIMIT, Mode, Policy
from mta_sts_policyd.sts.names import show
from mta_sts_policyd.sts.policy import mx_pattern_problem, parse_policy
from mta_sts_policyd.tools.policy_id import policy_id

ONE_DAY = 86_400
DEFAULT_MAX_AGE = 604_800
"""One week: long enough to ride out a policy-host outage, short enough to change course."""
TXT_TTL = 3600
POLICY_PATH = ".well-known/mta-sts.txt"


@dataclass(frozen=True)
class Request:
    domain: str
    mode: Mode
    mx: tuple[str, ...]
    max_age: int = DEFAULT_MAX_AGE
    uncovered: tuple[str, ...] = ()
    """MX hosts an `enforce` policy may leave uncovered, named by the operator."""


@dataclass
class Output:
    policy: Policy
    text: str
    """The policy file, CRLF line ends (the RFC 8461 §3.2 form), or an edited file as it is."""
    policy_id: str
    txt_record: str
    """The `_mta-sts` record in zone-file syntax."""
    refusals: list[str] = field(default_factory=list)
    """MX coverage: nothing but `--uncovered-mx HOST` passes these."""
    readiness: list[str] = field(default_factory=list)
    """Evidence that is missing (the TLS reports' verdict, added by the command; the MX lookup):
    `--force` passes these."""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diff: list[str] = field(default_factory=list)
    previous_id: str | None = None

    def refused(self, force: bool) -> bool:
        """The one rule of `generate` and `publish`: `--force` passes only missing evidence."""
        return bool(self.refusals) or (bool(self.readiness) and not force)


def render_policy(mode: Mode, mx: Sequence[str], max_age: int) -> str:
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {pattern}" for pattern in dict.fromkeys(p.lower().rstrip(".") for p in mx)]
    lines.append(f"max_age: {max_age}")
    return "".join(f"{line}\r\n" for line in lines)


def txt_record(domain: str, record_id: str, ttl: int = TXT_TTL) -> str:
    return f'_mta-sts.{domain}. {ttl} IN TXT "v=STSv1; id={record_id}"'


def seconds_and_days(seconds: int) -> str:
    """`86400 s (1 day)`, `1209600 s (14 days)`: how generate and publish show a max_age."""
    days = round(seconds / ONE_DAY, 2)
    return f"{seconds} s ({days:g} day{'' if days == 1 else 's'})"


def kept_settings(
    existing: bytes | None, mode: Mode | None, max_age: int | None
) -> tuple[Mode, int, str | None]:
    """--mode and --max-age as given, else the current policy's, else testing and a week.

    Changing the MX lines must not quietly drop `enforce` or change max_age, so what is not
    given is kept from the file served now (the note says so). A current file that is no
    policy cannot say its mode: PolicySyntaxError, asking for --mode.
    """
    if mode is not None and max_age is not None:
        return mode, max_age, None
    old = None
    if existing is not None:
        try:
            old = parse_policy(existing)
        except PolicySyntaxError as exc:
            if mode is None:
                raise PolicySyntaxError(
                    f"the current policy file is no policy ({exc}), so its mode cannot be "
                    "kept: give --mode"
                ) from None
    if old is None:
        return mode or Mode.TESTING, DEFAULT_MAX_AGE if max_age is None else max_age, None
    kept = [] if mode is not None else [f"mode {old.mode}"]
    kept += [] if max_age is not None else [f"max_age {seconds_and_days(old.max_age)}"]
    note = f"{' and '.join(kept)} kept from the current policy (--mode, --max-age change them)"
    return mode or old.mode, old.max_age if max_age is None else max_age, note


def build(
    request: Request, current_mx: Sequence[str] | None, existing: bytes | None = None
) -> Output:
    """The policy and record for `request`; PolicySyntaxError for an invalid pattern or max_age.

    `current_mx` is None when the MX lookup failed (coverage cannot be verified), () for a
    domain without MX hosts. `existing` is the policy file currently served, for the diff.
    """
    for pattern in request.mx:
        problem = mx_pattern_problem(pattern.rstrip("."))
        if problem is not None:  # named as given, not as a line of a file nobody wrote
            raise PolicySyntaxError(f"mx {show(pattern)} is not a valid pattern: {problem}")
    if not 0 <= request.max_age <= MAX_AGE_LIMIT:
        raise PolicySyntaxError(f"max_age must be 0 to {MAX_AGE_LIMIT} seconds")
    text = render_policy(request.mode, request.mx, request.max_age)
    return review(request.domain, text.encode("utf-8"), current_mx, existing, request.uncovered)


def review(
    domain: str,
    body: bytes,
    current_mx: Sequence[str] | None,
    existing: bytes | None = None,
    uncovered: Sequence[str] = (),
) -> Output:
    """The checks every new policy file gets, built by `build` or edited (`publish --policy`):
    size and syntax (PolicySyntaxError), MX coverage, warnings, the diff against `existing`."""
    too_large = size_problem(len(body))
    if too_large is not None:
        raise PolicySyntaxError(f"the policy file is {too_large}")
    policy = parse_policy(body)
    new_id = policy_id(policy)
    out = Output(policy, body.decode("utf-8"), new_id, txt_record(domain, new_id))
    if policy.mode is Mode.ENFORCE and current_mx is None:
        out.readiness.append(
            "the domain's MX hosts could not be looked up, so coverage is unverified: "
            "try again, or give --nameserver (--force if you checked the mx lines yourself)"
        )
    refusals, allowed = _coverage(policy, current_mx or (), uncovered)
    out.refusals.extend(refusals)
    out.warnings.extend(allowed + _warnings(policy, existing))
    if existing is not None:
        _compare(out, existing)
    return out


def _coverage(
    policy: Policy, current_mx: Sequence[str], uncovered: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(refusals, warnings): an uncovered MX host is refused unless named in `uncovered`."""
    if policy.mode is not Mode.ENFORCE:
        return [], []
    allowed = {h.lower().rstrip(".") for h in uncovered}
    missing = [h.lower() for h in current_mx if not patterns_matching(policy.mx, h)]
    problem = "is not covered by any mx line: compliant senders {} defer its mail"
    refusals = [
        f"MX host {h} {problem.format('would')} (--uncovered-mx {h} if that is meant)"
        for h in missing
        if h not in allowed
    ]
    warnings = [
        f"MX host {h} {problem.format('will')} (--uncovered-mx)" for h in missing if h in allowed
    ]
    warnings += [
        f"--uncovered-mx {h}: not an MX host this policy leaves uncovered; nothing allowed"
        for h in sorted(allowed.difference(missing))
    ]
    return refusals, warnings


def _warnings(policy: Policy, existing: bytes | None) -> list[str]:
    if policy.mode is Mode.ENFORCE and policy.max_age < ONE_DAY:
        return [
            f"max_age {policy.max_age} is under one day: an outage of the policy host "
            "soon lets senders forget the policy"
        ]
    if policy.mode is not Mode.NONE:
        return []
    old = _parse(existing)
    if old is None or old.mode is Mode.NONE:
        return [
            "mode none withdraws MTA-STS: keep serving this file for at least the previous "
            "policy's max_age, because senders may enforce the old policy until then"
        ]
    return [
        f"mode none withdraws MTA-STS: keep serving this file for the old max_age, "
        f"{seconds_and_days(old.max_age)}, before removing the TXT record and the file; "
        "senders may enforce the old policy until then"
    ]


def _parse(existing: bytes | None) -> Policy | None:
    if existing is None:
        return None
    try:
        return parse_policy(existing)
    except PolicySyntaxError:
        return None


def _compare(out: Output, existing: bytes) -> None:
    old_text = _printable(existing.decode("utf-8", "backslashreplace").replace("\r\n", "\n"))
    new_text = _printable(out.text.replace("\r\n", "\n"))
    out.diff.extend(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            "current policy",
            "new policy",
        )
    )
    old = _parse(existing)
    out.previous_id = policy_id(old) if old else None


def _printable(text: str) -> str:
    """Controls and undecodable bytes of a damaged file escaped (`\\x00`), never sent to the
    terminal as they are; line ends and tabs kept."""
    return "".join(
        c if c.isprintable() or c in "\n\t" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def switches_to_enforce(served: bytes | None) -> bool:
    """An `enforce` policy replaces one that is not enforced (or nothing, or an unreadable file).

    Changing a policy that is already enforced (an MX added) is no switch: senders already
    defer mail on failures, and the MX coverage rule guards the change.
    """
    old = _parse(served)
    return old is None or old.mode is not Mode.ENFORCE


def enforce_refusals(domain: str, served: bytes | None, verdict: Verdict | None) -> list[str]:
    """Why switching `domain` to `enforce` must wait (`--force` overrides); the one rule of
    `generate` and `publish`.

    Only TLS reports about the policy served now show that compliant senders will not defer
    mail, so no evidence is not taken as good evidence: nothing served yet, or no reports kept
    here, refuses like a NOT READY verdict does (its `min_days` is not met either). An
    operator who reads the reports elsewhere says so with `--force`.
    """
    if not switches_to_enforce(served):
        return []
    if served is None:
        return [
            f"no policy is served for {domain} yet: publish it in testing mode first; "
            "the TLS reports about it show when enforce is safe"
        ]
    if verdict is None:
        return [
            f"no TLS reports are kept here (reports-in, docs/reports-in.md), so nothing shows "
            f"that enforce is safe for {domain}; if you read them elsewhere and they are "
            "clean, give --force"
        ]
    return [f"TLS reports: {reason}" for reason in verdict.reasons]
