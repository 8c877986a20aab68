"""`mta-sts-policyd generate`: print (or write) a policy file and its TXT record.

Exit codes: 0 printed/written, 1 refused (see tools/generate.py: MX coverage, and the switch to
`enforce` without READY TLS reports, the rule `publish` shares; `--force` overrides),
64 usage (invalid domain, pattern or max_age), 75 the MX hosts could not be looked up and no
`--mx` was given.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from mta_sts_policyd.cli.arguments import domain_name, file_argument, nameserver
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.output import fail, print_json
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.service.composition import enforce_readiness
from mta_sts_policyd.service.own_domains import mx_lookup
from mta_sts_policyd.state_files import write_atomically
from mta_sts_policyd.sts.model import Mode
from mta_sts_policyd.tools.generate import (
    DEFAULT_MAX_AGE,
    POLICY_PATH,
    Output,
    Request,
    build,
    enforce_refusals,
    switches_to_enforce,
)

EXIT_OK, EXIT_REFUSED = ExitCode.OK, ExitCode.NOT_FOUND
EXIT_USAGE, EXIT_TEMPFAIL = ExitCode.USAGE, ExitCode.TEMPFAIL


def add_generate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="make a policy file and its TXT record")
    p.add_argument(
        "--domain", required=True, type=domain_name, help="the policy domain (your mail domain)"
    )
    p.add_argument("--mode", choices=[m.value for m in Mode], default="testing")
    p.add_argument(
        "--mx",
        action="append",
        default=[],
        metavar="HOST",
        help="mx pattern (repeatable; default: the domain's current MX hosts)",
    )
    p.add_argument("--max-age", type=int, default=DEFAULT_MAX_AGE, metavar="SECONDS")
    p.add_argument(
        "--write",
        metavar="DIR",
        type=Path,
        help=f"write DIR/DOMAIN/{POLICY_PATH} (the policy host's document root)",
    )
    p.add_argument(
        "--existing",
        metavar="FILE",
        type=Path,
        help="current policy file to diff against (default: the --write target)",
    )
    p.add_argument("--force", action="store_true", help="write/print despite refusals")
    p.add_argument(
        "--nameserver",
        action="append",
        type=nameserver,
        metavar="IP[:PORT]",
        help="DNS server for the MX lookup (default: [discovery] nameservers)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=generate_command)


def generate_command(args: argparse.Namespace, config: Config) -> int:
    domain: str = args.domain
    seen = asyncio.run(mx_lookup(config, args.nameserver)(domain))
    why = seen.unknown_because
    if not args.mx and why is not None:
        code = EXIT_TEMPFAIL if seen.error is not None else EXIT_USAGE
        message = f"no MX hosts known for {domain}: {why}; give --mx"
        return fail("generate", message, code, as_json=args.json)
    current = seen.known_hosts
    if args.existing is not None and not args.existing.is_file():
        what = "not a file" if args.existing.exists() else "no such file"
        message = f"--existing {args.existing}: {what}"
        return fail("generate", message, EXIT_USAGE, as_json=args.json)
    target = args.write / domain / POLICY_PATH if args.write else None
    existing_path = args.existing or target
    existing = None
    if existing_path and existing_path.is_file():
        with file_argument("--existing" if args.existing else "--write", existing_path):
            existing = existing_path.read_bytes()
    mx = tuple(args.mx) or tuple(current or ())
    if Mode(args.mode) is not Mode.NONE and not mx:
        return fail(
            "generate", f"{domain} has no MX hosts; give --mx", EXIT_USAGE, as_json=args.json
        )
    try:
        out = build(Request(domain, Mode(args.mode), mx, args.max_age), current, existing)
    except PolicySyntaxError as exc:
        return fail("generate", f"{exc}", EXIT_USAGE, as_json=args.json)
    if Mode(args.mode) is Mode.ENFORCE:
        out.refusals.extend(enforce_gate(config, domain, existing, known=existing_path is not None))
    refused = bool(out.refusals) and not args.force
    if not refused and target is not None:
        with file_argument("--write", target, writing=True):
            write_policy(target, out.text)
    _print(args, out, target if not refused else None, refused)
    return EXIT_REFUSED if refused else EXIT_OK


def enforce_gate(config: Config, domain: str, served: bytes | None, *, known: bool) -> list[str]:
    """The refusals of a switch to `enforce` (tools/generate.py's rule, shared with publish).

    `known` is False when no file says what is served now (no --write, no --existing).
    """
    if not switches_to_enforce(served):
        return []
    if not known:
        return [
            f"the policy served for {domain} now is unknown (give --write DIR or --existing "
            "FILE): the TLS reports about it decide whether enforce is safe"
        ]
    lines = served.decode("utf-8", "replace").splitlines() if served is not None else []
    verdict = enforce_readiness(config, domain, lines) if served is not None else None
    return enforce_refusals(domain, served, verdict)


def write_policy(target: Path, text: str) -> None:
    """Atomic replace: the policy host never serves a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, text.encode("utf-8"), mode=0o644)


def _print(args: argparse.Namespace, out: Output, written: Path | None, refused: bool) -> None:
    if args.json:
        data = {
            "policy": out.text,
            "id": out.policy_id,
            "txt_record": out.txt_record,
            "refusals": out.refusals,
            "warnings": out.warnings,
            "refused": refused,
            "diff": "".join(out.diff),
            "previous_id": out.previous_id,
            "written": str(written) if written else None,
        }
        print_json(data)
        return
    for problem in out.refusals:
        label = "warning (forced)" if args.force else "refused"
        print(f"generate: {label}: {problem}", file=sys.stderr)
    for warning in out.warnings:
        print(f"generate: warning: {warning}", file=sys.stderr)
    if out.diff:
        print(f"# changes (id {out.previous_id or '?'} -> {out.policy_id}):")
        print("".join(f"# {line}" for line in out.diff).rstrip("\n"))
    print(f"# policy file ({f'written to {written}' if written else 'not written'}):")
    print(out.text.replace("\r\n", "\n"), end="")
    print("# TXT record (zone-file syntax):")
    print(out.txt_record)
