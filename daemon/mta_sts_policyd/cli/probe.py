"""`mta-sts-policyd probe MX-HOST`: an operator's one-off STARTTLS check of an MX host.

Exit codes follow cli.py: 0 pass, 1 fail (a reportable RFC 8460 failure), 64 usage,
75 could not probe (timeout, refused, policy fetch failed: nothing was decided).

An address as MX-HOST is connected to, and the certificate is judged against that address, as
a sender would judge an MX record naming it: a name mismatch is then the right verdict, and the
output adds a hint (`hint` in the JSON) to give the host name with `--address` instead.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mta_sts_policyd.cli.arguments import ip_address, port_number, seconds
from mta_sts_policyd.cli.exit_codes import ExitCode
from mta_sts_policyd.cli.output import fail, print_json
from mta_sts_policyd.config.settings import Config
from mta_sts_policyd.endpoints import split_host_port
from mta_sts_policyd.errors import ConfigError, MtaStsError, ResultType
from mta_sts_policyd.probe.prober import MxProber, ProbeResult, Resolver, probe_target
from mta_sts_policyd.service import composition

EXIT_PASS, EXIT_FAIL = ExitCode.OK, ExitCode.NOT_FOUND
EXIT_USAGE, EXIT_TEMPFAIL = ExitCode.USAGE, ExitCode.TEMPFAIL

PatternSource = Callable[[str], Awaitable[Sequence[str]]]
"""Policy domain -> its `mx` patterns; raises MtaStsError when the policy cannot be had."""


def add_probe_parser(
    sub: Any, common: argparse.ArgumentParser, reader: argparse.ArgumentParser
) -> None:
    """Register the `probe` subcommand (called from cli.py's extension hook)."""
    p = sub.add_parser(
        "probe", parents=[common, reader], help="check an MX host's STARTTLS and certificate"
    )
    p.add_argument(
        "mx_host",
        metavar="MX-HOST",
        help="MX host name (as in the MX record), or an IPv4 or IPv6 address to connect to (the"
        " certificate is then checked against the address: for a named MX use --address); no"
        " port (see --port)",
    )
    p.add_argument(
        "--policy-domain",
        metavar="DOMAIN",
        help="also check MX-HOST against the mx patterns of DOMAIN's MTA-STS policy",
    )
    p.add_argument("--port", type=port_number, default=25, help="SMTP port (default 25)")
    p.add_argument(
        "--address",
        type=ip_address,
        metavar="IP",
        help="connect to this address instead of resolving MX-HOST (an IP as MX-HOST is used so)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="per-step timeout (default probe.timeout)",
    )
    p.set_defaults(handler=probe_command)


def probe_command(
    args: argparse.Namespace, config: Config, *, fetch_patterns: PatternSource | None = None
) -> int:
    """Probe one MX and print the verdict; `fetch_patterns` replaces policy discovery in tests."""
    return asyncio.run(run_probe(args, config, fetch_patterns=fetch_patterns))


async def run_probe(
    args: argparse.Namespace, config: Config, *, fetch_patterns: PatternSource | None = None
) -> int:
    """The body of `probe_command`, for callers that already run an event loop."""
    try:
        host = probe_target(args.mx_host.strip())
    except ValueError as err:
        reason = _port_given(args.mx_host.strip()) or f"invalid MX host name: {err}"
        return fail("probe", reason, EXIT_USAGE, as_json=args.json)
    source = fetch_patterns or _discovery_patterns(config)
    patterns: Sequence[str] | None = None
    if args.policy_domain:
        try:
            patterns = tuple(await source(args.policy_domain))
        except MtaStsError as err:
            reason = f"could not get the policy of {args.policy_domain}: {err}"
            return fail("probe", reason, EXIT_TEMPFAIL, as_json=args.json)
    prober = _prober(args, config)
    result = await prober.probe_fresh(host, patterns)
    code = EXIT_PASS if result.ok else EXIT_TEMPFAIL if result.transient else EXIT_FAIL
    hint = address_hint(args.mx_host.strip(), result)
    if args.json:
        data = result.to_json()
        data.update(policy_domain=args.policy_domain, mx_patterns=_listed(patterns), port=args.port)
        print_json({**data, "hint": hint, "exit_code": int(code)})
    else:
        print(render_text(result, args.port, args.policy_domain, patterns))
        if hint:
            print(f"  hint: {hint}")
    return code


def address_hint(mx_host: str, result: ProbeResult) -> str | None:
    """What to do when an address given as MX-HOST fails the name check: the verdict is right
    (no certificate names an address a sender would check), but the operator most likely
    meant to test the certificate of a named MX at that address."""
    literal = _literal(mx_host)
    if literal is None or result.result_type is not ResultType.CERTIFICATE_HOST_MISMATCH:
        return None
    return (
        f"MX-HOST {mx_host} is an address, so the certificate was checked against the address;"
        f" to check it against the MX record's host name, give that name and this address:"
        f" probe NAME --address {literal}"
    )


def _port_given(text: str) -> str | None:
    """The usage message for MX-HOST with a port (`[::1]:25`, `mx.example.com:25`): the port
    is an option, and the host-name rule alone would only call `:25` a bad DNS label."""
    try:
        host, port, bracketed = split_host_port(text, "MX-HOST", default=-1)  # -1: none given
    except ConfigError:  # a bracket left open: not a port question
        return None
    if not host or not (port.isascii() and port.isdigit()):
        return None
    shown = f"[{host}]" if bracketed else host
    return f"MX-HOST {text!r} carries a port: give the port with --port ({shown} --port {port})"


def _literal(host: str) -> str | None:
    """MX-HOST given as an address (`192.0.2.25`, `[2001:db8::25]`): connect to it, no DNS."""
    try:
        return ip_address(host)
    except argparse.ArgumentTypeError:
        return None


def _listed(patterns: Sequence[str] | None) -> list[str] | None:
    return None if patterns is None else list(patterns)


def _prober(args: argparse.Namespace, config: Config) -> MxProber:
    address = args.address or _literal(args.mx_host.strip())
    if address:
        fixed = [address]

        async def resolve_fixed(_host: str) -> list[str]:
            return fixed

        resolve: Resolver = resolve_fixed
    else:
        resolve = composition.address_lookup(config)
    return composition.make_prober(
        config, resolve, port=args.port, timeout=args.timeout, one_off=True
    )


def _discovery_patterns(config: Config) -> PatternSource:
    """The daemon's own discovery: same DNS, HTTPS limits and trust store as `serve`."""

    async def fetch(domain: str) -> Sequence[str]:
        discovery = composition.make_discovery(config)
        try:
            fetched = await discovery.fetch_policy(domain)
        finally:
            await discovery.aclose()
        return fetched.policy.mx

    return fetch


def render_text(
    result: ProbeResult, port: int, policy_domain: str | None, patterns: Sequence[str] | None
) -> str:
    """A few lines for a human: verdict first, then what was seen."""
    where = f"{result.mx_host} [{result.address or '-'}]:{port}"
    if result.ok:
        head = f"PASS {where}: {result.reason}"
    elif result.transient:
        head = f"UNKNOWN {where}: could not probe: {result.reason}"
    else:
        head = f"FAIL {where}: {result.result_type}: {result.reason}"
    lines = [head]
    if result.cert_names or result.cert_not_after:
        until = result.cert_not_after.isoformat() if result.cert_not_after else "?"
        names = ", ".join(result.cert_names) or "(no DNS names)"
        lines.append(f"  certificate: {names}; not after {until}")
    if result.tls_version:
        lines.append(f"  tls: {result.tls_version}")
    if result.receiving_helo:
        lines.append(f"  ehlo: {result.receiving_helo}")
    if policy_domain is not None:
        lines.append(f"  policy {policy_domain}: mx {', '.join(patterns or ()) or '(none)'}")
    if result.failure_reason_code:
        lines.append(f"  failure-reason-code: {result.failure_reason_code}")
    return "\n".join(lines)
