"""`mta-sts-policyd publish DOMAIN`: generate (or take the edited file), serve, fetch back, then
the TXT record, then wait for every authoritative name server (tools/publish.py says why in
that order). `enforce` is refused while `reports-in readiness` says not ready, unless --force.

Exit codes: 0 published and confirmed; 1 refused (readiness, generate's refusals); 64 bad
command line or policy file; 75 a step did not complete in time (run it again: it is
idempotent).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from mta_sts_policyd.cli.arguments import (
    ca_file,
    domain_name,
    file_argument,
    nameserver,
    port_number,
    seconds,
)
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.generate import enforce_gate, write_policy
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.service.own_domains import ReachSettings, mx_lookup, open_reach
from mta_sts_policyd.sts.model import Mode
from mta_sts_policyd.sts.policy import parse_policy
from mta_sts_policyd.tools.generate import DEFAULT_MAX_AGE, POLICY_PATH, Request, build
from mta_sts_policyd.tools.policy_id import policy_id
from mta_sts_policyd.tools.publish import PublishReach, publish

EXIT_OK, EXIT_REFUSED = ExitCode.OK, ExitCode.NOT_FOUND
EXIT_USAGE, EXIT_TEMPFAIL = ExitCode.USAGE, ExitCode.TEMPFAIL


def add_publish_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("publish", parents=[common], help="serve a policy, then publish its id")
    p.add_argument("domain", metavar="DOMAIN", type=domain_name)
    p.add_argument("--policy", type=Path, metavar="FILE", help="publish this (edited) file")
    p.add_argument("--mode", choices=[m.value for m in Mode], help="default: testing")
    p.add_argument("--mx", action="append", default=[], metavar="HOST")
    p.add_argument(
        "--max-age", type=int, metavar="SECONDS", help=f"default: {DEFAULT_MAX_AGE} (a week)"
    )
    p.add_argument(
        "--hook",
        metavar="COMMAND",
        help="run COMMAND (sh -c) to set the TXT record; env MTA_STS_TXT_NAME, "
        "MTA_STS_TXT_VALUE, MTA_STS_DOMAIN, MTA_STS_ID",
    )
    p.add_argument("--force", action="store_true", help="enforce without a READY verdict")
    p.add_argument("--timeout", type=seconds, default=300.0, help="seconds for each wait")
    p.add_argument("--nameserver", action="append", type=nameserver, metavar="IP[:PORT]")
    p.add_argument(
        "--ca-file", type=ca_file, help="trust these CAs for the fetch-back (test set-ups)"
    )
    p.add_argument("--https-port", type=port_number, help="policy host port (test set-ups)")
    p.add_argument("--dns-port", type=port_number, default=53, help="authoritative servers' port")
    p.set_defaults(handler=publish_command)


def publish_command(args: argparse.Namespace, config: Config) -> int:
    domain: str = args.domain
    target = Path(config.host.policy_dir) / domain / POLICY_PATH
    if args.policy is not None and (args.mode or args.mx or args.max_age is not None):
        reason = "--policy publishes the file as it is; --mode, --mx and --max-age build one"
        print(f"publish: {reason}", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = _policy_text(args, config, domain, target)
        policy = parse_policy(text.encode("utf-8"))
    except PolicySyntaxError as exc:
        where = f"--policy {args.policy}: " if args.policy is not None else ""
        print(f"publish: {where}{exc}", file=sys.stderr)
        return EXIT_USAGE
    except _Refused as exc:
        refused = "refused: " if exc.code is EXIT_REFUSED else ""
        print(f"publish: {refused}{exc}", file=sys.stderr)
        return exc.code
    if policy.mode is Mode.ENFORCE and not args.force:
        blockers = _not_ready(config, domain, target)
        if blockers:
            print(f"publish: {domain} is not ready for enforce (--force overrides):")
            for reason in blockers:
                print(f"  - {reason}")
            return EXIT_REFUSED
    return asyncio.run(_run(args, config, domain, text, policy_id(policy), target))


class _Refused(Exception):
    """Nothing is published; `code` says whose move it is (generate's codes for the same)."""

    def __init__(self, message: str, code: ExitCode = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def _policy_text(args: argparse.Namespace, config: Config, domain: str, target: Path) -> str:
    if args.policy is not None:
        with file_argument("--policy", args.policy):
            return str(args.policy.read_text(encoding="utf-8"))
    seen = asyncio.run(mx_lookup(config, args.nameserver)(domain))
    current = seen.known_hosts
    mx = tuple(args.mx) or tuple(current or ())
    if not mx:
        why = f": {seen.unknown_because}" if seen.unknown_because else ""
        code = EXIT_TEMPFAIL if seen.error is not None else EXIT_USAGE  # as `generate` does
        raise _Refused(f"no MX hosts known for {domain}{why}; give --mx", code)
    existing = target.read_bytes() if target.is_file() else None
    mode = Mode(args.mode or "testing")
    max_age = DEFAULT_MAX_AGE if args.max_age is None else args.max_age
    out = build(Request(domain, mode, mx, max_age), current, existing)
    if out.refusals and not args.force:
        raise _Refused("; ".join(out.refusals))
    return out.text


def _not_ready(config: Config, domain: str, target: Path) -> list[str]:
    """Why the switch to enforce must wait: generate's rule, for the policy served now."""
    served = target.read_bytes() if target.is_file() else None
    return enforce_gate(config, domain, served, known=True)


async def _run(
    args: argparse.Namespace, config: Config, domain: str, text: str, record_id: str, target: Path
) -> int:
    def say(line: str) -> None:
        print(line, flush=True)

    async def announce(name: str, value: str) -> str | None:
        say(f'TXT record to set: {name}. IN TXT "{value}"')
        if not args.hook:
            return None
        env = {**os.environ, "MTA_STS_TXT_NAME": name, "MTA_STS_TXT_VALUE": value}
        env |= {"MTA_STS_DOMAIN": domain, "MTA_STS_ID": record_id}
        process = await asyncio.create_subprocess_shell(args.hook, env=env)
        code = await process.wait()
        return None if code == 0 else f"the hook exited with {code}; TXT record not set"

    def write(body: bytes) -> None:
        with file_argument("[host] policy_dir:", target, writing=True):
            write_policy(target, body.decode("utf-8"))

    settings = ReachSettings(
        nameservers=args.nameserver,
        ca_file=args.ca_file,
        https_port=args.https_port,
        timeout=10.0,
    )
    async with AsyncExitStack() as stack:
        reach = await open_reach(config, settings, stack)
        publish_reach = PublishReach(reach.dns, reach.fetcher, args.dns_port, args.timeout)
        say(f"writing {target} (id {record_id})")
        progress = await publish(
            domain,
            text.encode("utf-8"),
            record_id,
            write,
            announce,
            publish_reach,
            say,
        )
    if progress.problem is not None:
        print(f"publish: {progress.problem}", file=sys.stderr)
        return EXIT_TEMPFAIL
    say(f"published: {domain} id={record_id}")
    return EXIT_OK
