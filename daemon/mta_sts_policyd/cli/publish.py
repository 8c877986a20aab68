"""`mta-sts-policyd publish DOMAIN`: generate (or take the edited file), serve, fetch back, then
the TXT record, then wait for every authoritative name server (tools/publish.py says why in
that order). The file is judged as `generate` judges it (cli/policy_review.py): the same
refusals, warnings and diff; what --mode and --max-age do not say is kept from the policy
served now; `enforce` waits for a READY verdict unless --force, and an MX host it leaves
uncovered is refused unless named with --uncovered-mx.

Exit codes: 0 published and confirmed; 1 refused (readiness, MX coverage); 64 bad command line
or policy file (also one larger than senders read); 75 a step did not complete in time (run it
again: it is idempotent).
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
from mta_sts_policyd.cli.generate import write_policy
from mta_sts_policyd.cli.policy_review import (
    Unusable,
    add_change_options,
    add_policy_options,
    build_change,
    enforce_gate,
    show_review,
)
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.errors import PolicySyntaxError
from mta_sts_policyd.service.own_domains import ReachSettings, mx_lookup, open_reach
from mta_sts_policyd.tools.generate import POLICY_PATH, Output, review
from mta_sts_policyd.tools.publish import PublishReach, publish

EXIT_OK, EXIT_REFUSED = ExitCode.OK, ExitCode.NOT_FOUND
EXIT_USAGE, EXIT_TEMPFAIL = ExitCode.USAGE, ExitCode.TEMPFAIL
KEPT = "default: the served policy's, else"


def add_publish_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("publish", parents=[common], help="serve a policy, then publish its id")
    p.add_argument("domain", metavar="DOMAIN", type=domain_name)
    p.add_argument("--policy", type=Path, metavar="FILE", help="publish this (edited) file")
    add_policy_options(p, kept=KEPT)
    p.add_argument(
        "--hook",
        metavar="COMMAND",
        help="run COMMAND (sh -c) to set the TXT record; env MTA_STS_TXT_NAME, "
        "MTA_STS_TXT_VALUE, MTA_STS_DOMAIN, MTA_STS_ID",
    )
    add_change_options(p)
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
    served = None
    if target.is_file():
        with file_argument("[host] policy_dir:", target):
            served = target.read_bytes()
    try:
        out = _review(args, config, served)
    except Unusable as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return exc.code
    enforce_gate(out, config, domain, served, known=True)
    show_review("publish", out, args.force)
    if out.refused(args.force):
        return EXIT_REFUSED
    return asyncio.run(_run(args, config, domain, out, served, target))


def _review(args: argparse.Namespace, config: Config, served: bytes | None) -> Output:
    """The file to publish, judged as `generate` judges it; Unusable when there is none."""
    seen = asyncio.run(mx_lookup(config, args.nameserver)(args.domain))
    if args.policy is None:
        return build_change(args.domain, args, seen, served)
    with file_argument("--policy", args.policy):
        body = args.policy.read_bytes()
    try:
        return review(args.domain, body, seen.known_hosts, served, tuple(args.uncovered_mx))
    except PolicySyntaxError as exc:
        raise Unusable(f"--policy {args.policy}: {exc}", EXIT_USAGE) from None


async def _run(
    args: argparse.Namespace,
    config: Config,
    domain: str,
    out: Output,
    served: bytes | None,
    target: Path,
) -> int:
    record_id = out.policy_id

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
        body = out.text.encode("utf-8")
        progress = await publish(
            domain, body, record_id, write, announce, publish_reach, say, previous=served
        )
    if progress.problem is not None:
        print(f"publish: {progress.problem}", file=sys.stderr)
        return EXIT_TEMPFAIL
    say(f"published: {domain} id={record_id}")
    return EXIT_OK
