"""`mta-sts-policyd generate`: print (or write) a policy file and its TXT record.

Exit codes: 0 printed/written, 1 refused (see tools/generate.py: MX coverage, which only
`--uncovered-mx HOST` passes, and the switch to `enforce` without READY TLS reports, which
`--force` passes; the rules `publish` shares through cli/policy_review.py), 64 usage (invalid
domain, pattern or max_age, a file larger than senders read), 75 the MX hosts could not be
looked up and no `--mx` was given.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from mta_sts_policyd.cli.arguments import domain_name, file_argument, nameserver
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.output import fail, print_json
from mta_sts_policyd.cli.policy_review import (
    Unusable,
    add_change_options,
    add_policy_options,
    build_change,
    enforce_gate,
    show_review,
)
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.service.own_domains import mx_lookup
from mta_sts_policyd.state_files import write_atomically
from mta_sts_policyd.tools.generate import POLICY_PATH, Output

EXIT_OK, EXIT_REFUSED = ExitCode.OK, ExitCode.NOT_FOUND
EXIT_USAGE, EXIT_TEMPFAIL = ExitCode.USAGE, ExitCode.TEMPFAIL
KEPT = "default: the current policy's (--write or --existing file), else"


def add_generate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="make a policy file and its TXT record")
    p.add_argument(
        "--domain", required=True, type=domain_name, help="the policy domain (your mail domain)"
    )
    add_policy_options(p, kept=KEPT)
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
    add_change_options(p)
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
    target = args.write / args.domain / POLICY_PATH if args.write else None
    try:
        out = _review(args, config, target)
    except Unusable as exc:
        return fail("generate", str(exc), exc.code, as_json=args.json)
    refused = out.refused(args.force)
    if not refused and target is not None:
        with file_argument("--write", target, writing=True):
            write_policy(target, out.text)
    _print(args, out, target if not refused else None, refused)
    return EXIT_REFUSED if refused else EXIT_OK


def _review(args: argparse.Namespace, config: Config, target: Path | None) -> Output:
    """The policy and everything said about it; Unusable when nothing can be made."""
    domain: str = args.domain
    if args.existing is not None and not args.existing.is_file():
        what = "not a file" if args.existing.exists() else "no such file"
        raise Unusable(f"--existing {args.existing}: {what}", EXIT_USAGE)
    existing_path = args.existing or target
    existing = None
    if existing_path and existing_path.is_file():
        with file_argument("--existing" if args.existing else "--write", existing_path):
            existing = existing_path.read_bytes()
    seen = asyncio.run(mx_lookup(config, args.nameserver)(domain))
    out = build_change(domain, args, seen, existing)
    enforce_gate(out, config, domain, existing, known=existing_path is not None)
    return out


def write_policy(target: Path, text: str) -> None:
    """Atomic replace: the policy host never serves a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, text.encode("utf-8"), mode=0o644)


def _print(args: argparse.Namespace, out: Output, written: Path | None, refused: bool) -> None:
    if args.json:
        code = EXIT_REFUSED if refused else EXIT_OK
        data = {
            "ok": not refused,
            "exit_code": int(code),
            "policy": out.text,
            "id": out.policy_id,
            "txt_record": out.txt_record,
            "refusals": out.refusals + out.readiness,
            "warnings": out.warnings,
            "notes": out.notes,
            "refused": refused,
            "diff": "".join(out.diff),
            "previous_id": out.previous_id,
            "written": str(written) if written else None,
        }
        if refused:
            data["error"] = "refused: " + "; ".join(out.refusals + out.readiness)
        print_json(data)
        return
    show_review("generate", out, args.force)
    print(f"# policy file ({f'written to {written}' if written else 'not written'}):")
    print(out.text.replace("\r\n", "\n"), end="")
    print("# TXT record (zone-file syntax):")
    print(out.txt_record)
