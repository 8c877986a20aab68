"""What `generate` and `publish` share on the command line, so one change is judged and shown
the same way by both: the MX hosts to cover, the policy built from --mode/--mx/--max-age
(what is not given is kept from the current policy), the readiness gate of the switch to
`enforce`, and one way to print the review (refusals, forced readiness, warnings, diff).

The rules themselves are pure, in tools/generate.py.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mta_sts_policyd.cli.arguments import mx_pattern
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.service.composition import enforce_readiness
from mta_sts_policyd.sts.model import Mode
from mta_sts_policyd.tools.check.observations import MxSeen
from mta_sts_policyd.tools.generate import (
    DEFAULT_MAX_AGE,
    Output,
    Request,
    build,
    enforce_refusals,
    kept_settings,
    switches_to_enforce,
)

FORCE_HELP = (
    "go ahead without missing evidence: a READY verdict of the TLS reports, or an MX lookup "
    "that failed; passes nothing else (an MX host left uncovered needs --uncovered-mx)"
)
UNCOVERED_HELP = (
    "let an enforce policy leave this current MX host uncovered: compliant senders will defer "
    "its mail (repeatable)"
)


class Unusable(Exception):
    """Nothing is written: `code` says whose move it is (64 the caller's, 75 try again)."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


def add_policy_options(p: Any, *, kept: str) -> None:
    """--mode, --mx and --max-age, worded the same in both commands; `kept` says where a value
    not given comes from."""
    p.add_argument("--mode", choices=[m.value for m in Mode], help=f"{kept} testing")
    p.add_argument(
        "--mx",
        action="append",
        default=[],
        type=mx_pattern,
        metavar="HOST",
        help="mx pattern (repeatable; default: the domain's current MX hosts)",
    )
    p.add_argument(
        "--max-age", type=int, metavar="SECONDS", help=f"{kept} {DEFAULT_MAX_AGE} (a week)"
    )


def add_change_options(p: Any) -> None:
    """--force and --uncovered-mx, worded the same in both commands."""
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument(
        "--uncovered-mx", action="append", default=[], metavar="HOST", help=UNCOVERED_HELP
    )


def mx_hosts(domain: str, given: tuple[str, ...], seen: MxSeen, mode: Mode) -> tuple[str, ...]:
    """--mx as given, else the domain's current MX hosts; Unusable when there are none."""
    if given:
        return given
    why = seen.unknown_because
    if why is not None:
        code = ExitCode.TEMPFAIL if seen.error is not None else ExitCode.USAGE
        raise Unusable(f"no MX hosts known for {domain}: {why}; give --mx", code)
    if mode is not Mode.NONE and not seen.hosts:
        raise Unusable(f"{domain} has no MX hosts; give --mx", ExitCode.USAGE)
    return seen.hosts


def build_change(
    domain: str, args: argparse.Namespace, seen: MxSeen, current: bytes | None
) -> Output:
    """The policy of --mode, --mx, --max-age and --uncovered-mx over the `current` file."""
    try:
        mode, max_age, note = kept_settings(
            current, Mode(args.mode) if args.mode else None, args.max_age
        )
        mx = mx_hosts(domain, tuple(args.mx), seen, mode)
        request = Request(domain, mode, mx, max_age, tuple(args.uncovered_mx))
        out = build(request, seen.known_hosts, current)
    except PolicySyntaxError as exc:
        raise Unusable(str(exc), ExitCode.USAGE) from None
    if note is not None:
        out.notes.append(note)
    return out


def enforce_gate(
    out: Output, config: Config, domain: str, served: bytes | None, *, known: bool
) -> None:
    """Add to `out.readiness` the refusals of a switch to `enforce` (tools/generate.py's rule),
    when `out` is an `enforce` policy replacing `served`.

    `known` is False when no file says what is served now (generate without --write or
    --existing).
    """
    if out.policy.mode is Mode.ENFORCE and switches_to_enforce(served):
        out.readiness.extend(_switch_refusals(config, domain, served, known=known))


def _switch_refusals(
    config: Config, domain: str, served: bytes | None, *, known: bool
) -> list[str]:
    if not known:
        return [
            f"the policy served for {domain} now is unknown (give --write DIR or --existing "
            "FILE): the TLS reports about it decide whether enforce is safe"
        ]
    lines = served.decode("utf-8", "replace").splitlines() if served is not None else []
    verdict = enforce_readiness(config, domain, lines) if served is not None else None
    return enforce_refusals(domain, served, verdict)


def show_review(command: str, out: Output, force: bool) -> None:
    """Refusals, warnings and notes on stderr, the diff on stdout (`# ` lines)."""
    for problem in out.refusals:
        print(f"{command}: refused: {problem}", file=sys.stderr)
    label = "warning (forced)" if force else "refused"
    for problem in out.readiness:
        print(f"{command}: {label}: {problem}", file=sys.stderr)
    if out.readiness and not force:
        print(
            f"{command}: not ready for enforce; --force goes ahead without this evidence "
            "(it passes nothing else)",
            file=sys.stderr,
        )
    for warning in out.warnings:
        print(f"{command}: warning: {warning}", file=sys.stderr)
    for note in out.notes:
        print(f"{command}: note: {note}", file=sys.stderr)
    if out.diff:
        print(f"# changes (id {out.previous_id or '?'} -> {out.policy_id}):")
        print("".join(f"# {line}" for line in out.diff).rstrip("\n"))
