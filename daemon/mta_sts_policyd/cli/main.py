"""Command line: one command, subcommands; `main(argv)` so tests call it directly.

Exit codes: cli/exit_codes.py (the one table); output: cli/output.py (the one JSON printer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mta_sts_policyd import __version__
from mta_sts_policyd.cli.arguments import (
    FileArgumentError,
    listen_address,
    lookup_key,
    seconds,
    state_directory,
)
from mta_sts_policyd.cli.cache import cmd_cache
from mta_sts_policyd.cli.exit_codes import ExitCode, answer_code
from mta_sts_policyd.cli.fleet import add_fleet_parser
from mta_sts_policyd.cli.output import fail, print_json
from mta_sts_policyd.config.settings import (
    DEFAULT_CONFIG_PATH,
    Config,
    config_as_dict,
    config_warnings,
    load_config,
    load_config_and_problems,
    render_toml,
    with_overrides,
    without_refused,
)
from mta_sts_policyd.errors import (
    ConfigError,
    MtaStsError,
    StateLockedError,
    StateUnusableError,
)

DESCRIPTION = (
    "MTA-STS (RFC 8461) policy daemon and TLS reporter (RFC 8460) for Postfix: Postfix asks it "
    "over socketmap which TLS policy applies to a destination domain."
)
EPILOG = (
    "exit codes: 0 found/ok, 1 no policy or nothing found, 64 usage error, "
    "75 temporary failure (try again), 78 configuration error. "
    "See mta-sts-policyd(8) and mta-sts-policyd.toml(5)."
)

Handler = Callable[[argparse.Namespace, Config], int]


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


# --- handlers ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.run import run_daemon

    return run_daemon(
        config, config_path=args.config, cli_listen=args.listen, cli_state_dir=args.state_dir
    )


def _daemon_address(config: Config, override: str | None) -> str:
    if override:
        return override
    return config.server.listen[0]


def cmd_query(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.postfix.client import SocketmapClient

    address = _daemon_address(config, args.socketmap)
    try:
        with SocketmapClient(address, timeout=args.timeout) as client:
            reply = client.query(args.domain, name=args.map).decode("utf-8", "replace")
    except (OSError, MtaStsError) as exc:
        reason = f"cannot ask the daemon at {address}: {exc}"
        return fail("query", reason, ExitCode.TEMPFAIL, as_json=args.json)
    status, _, data = reply.partition(" ")
    code = answer_code(reply)
    if args.json:
        print_json({"domain": args.domain, "status": status, "data": data, "reply": reply,
                    "exit_code": int(code)})  # fmt: skip
    elif status == "OK":
        print(data)
    else:
        print(reply.rstrip() or status, file=sys.stderr)
    return code


def cmd_resolve(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service import composition
    from mta_sts_policyd.tools.resolve import explain

    async def go() -> int:
        discovery = composition.make_discovery(config)
        try:
            result = await explain(
                discovery, args.domain, sts_attributes=composition.decide_sts_attributes(config)
            )
        finally:
            await discovery.aclose()
        code = ExitCode.TEMPFAIL if result.temporary else answer_code(result.reply)
        if args.json:
            print_json({**result.as_json(), "exit_code": int(code)})
        else:
            print(result.as_text())
        return code

    return asyncio.run(go())


def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.composition import own_report_domains
    from mta_sts_policyd.service.fleet_parts import check_fleet
    from mta_sts_policyd.service.host_parts import check_host, host_warnings
    from mta_sts_policyd.service.preflight import check_local_resources
    from mta_sts_policyd.service.tlsrpt_parts import check_report_files

    refused: list[str] = args.load_problems  # the loader's, each "key: why"
    note: str | None = None

    def report_files(config: Config) -> None:
        nonlocal note
        note = check_report_files(config, outside_ok=True)

    # The checks after loading (the DKIM key, a Redis password file, a non-domain, [host] as
    # `host` reads it, this machine's files) all run; what they say of a key the loader
    # already refused is left out (settings.without_refused), nothing else.
    problems: list[str] = []
    for check in (report_files, check_fleet, own_report_domains, check_host, check_local_resources):
        try:
            check(config)
        except ConfigError as exc:
            problems += exc.problems
    problems = without_refused(problems, refused)
    where = f"{args.config or DEFAULT_CONFIG_PATH}: "
    for warning in (*config_warnings(config), *host_warnings(config)):  # beside the errors too
        print(f"warning: {where}{warning}", file=sys.stderr)
    if refused or problems:  # all of them at once, each named by the file
        raise ConfigError(*(where + problem for problem in (*refused, *problems)))
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print_json(config_as_dict(config))
    else:
        source = args.config or "(default path; built-in defaults where absent)"
        print(f"# effective configuration from {source}\n")
        print(render_toml(config).rstrip("\n"))
    return ExitCode.OK


# --- parser -----------------------------------------------------------------------------------


def _common(default: Any = None) -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=default, help="config file (TOML)")
    help_state = "state directory (overrides cache.state_dir)"
    common.add_argument("--state-dir", type=state_directory, default=default, help=help_state)
    return common


def _reader(default: Any = False) -> _Parser:
    reader = _Parser(add_help=False)
    reader.add_argument(
        "--json", action="store_true", default=default, help="machine-readable output"
    )
    return reader


EXTENSION_COMMANDS = (
    "report",
    "probe",
    "generate",
    "check",
    "monitor",
    "reports-in",
    "host",
    "publish",
)
_CORE_COMMANDS = ("serve", "query", "resolve", "cache", "check-config", "fleet")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All subcommands; `report` and `probe` (which import dkimpy, cryptography and the SMTP
    stack) only when `command` is one of them or unknown, so `serve` stays lean in memory."""
    common = _common()
    reader = _reader()
    parser = _Parser(prog="mta-sts-policyd", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"mta-sts-policyd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("serve", parents=[common], help="run the daemon")
    p.add_argument(
        "--listen",
        action="append",
        type=listen_address,
        help="HOST:PORT or unix:/path (repeatable)",
    )
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("query", parents=[common, reader], help="ask the running daemon")
    p.add_argument("domain", type=lookup_key)
    p.add_argument(
        "--socketmap", type=listen_address, help="daemon address (default: first server.listen)"
    )
    p.add_argument("--map", default="postfix", help="socketmap name sent (default postfix)")
    p.add_argument("--timeout", type=seconds, default=110.0, help="seconds to wait (default 110)")
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("resolve", parents=[common, reader], help="discover and explain")
    p.add_argument("domain")
    p.set_defaults(handler=cmd_resolve)

    p = sub.add_parser("cache", help="inspect or change the running daemon's cache")
    csub = p.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    helps = {"list": "policies in memory; both tiers counted", "show": "one cached policy",
             "purge": "forget one domain or all", "refresh": "discover one domain now"}  # fmt: skip
    csub.add_parser("list", parents=[common, reader], help=helps["list"]).set_defaults(
        handler=cmd_cache
    )
    for name, nargs in (("show", None), ("purge", "?"), ("refresh", None)):
        cp = csub.add_parser(name, parents=[common, reader], help=helps[name])
        cp.add_argument("domain", nargs=nargs)
        cp.set_defaults(handler=cmd_cache)

    p = sub.add_parser("check-config", parents=[common, reader], help="validate and print config")
    p.set_defaults(handler=cmd_check_config)
    add_fleet_parser(sub, common, reader)
    if command is None or command in EXTENSION_COMMANDS:
        _register_extensions(sub, common, reader)
    return parser


def _register_extensions(sub: Any, common: _Parser, reader: _Parser) -> None:
    """Subcommands owned by other modules (TLS-RPT reports, MX probe, own-domain tools)."""
    from mta_sts_policyd.cli import report as report_commands
    from mta_sts_policyd.cli import reports_in
    from mta_sts_policyd.cli.check import add_check_parser
    from mta_sts_policyd.cli.generate import add_generate_parser
    from mta_sts_policyd.cli.host import add_host_parser
    from mta_sts_policyd.cli.monitor import add_monitor_parser
    from mta_sts_policyd.cli.probe import add_probe_parser
    from mta_sts_policyd.cli.publish import add_publish_parser

    add_probe_parser(sub, common, reader)
    add_generate_parser(sub, common)
    add_check_parser(sub, common)
    add_monitor_parser(sub, common)
    report_commands.register(sub, parents=[common])
    reports_in.register(
        sub, common, reader, [_common(argparse.SUPPRESS), _reader(argparse.SUPPRESS)]
    )
    add_host_parser(sub, common)
    add_publish_parser(sub, common)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; expected failures end in one message and their exit code, never a
    traceback (a traceback means a bug)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args_list
    try:
        code = _run(args_list, as_json)
        sys.stdout.flush()  # a closed pipe must surface here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly; later flushes go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.PIPE_CLOSED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def _run(args_list: list[str], as_json: bool) -> int:
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command if command in _CORE_COMMANDS else None)
    try:
        args = parser.parse_args(args_list)
    except UsageError as exc:
        if as_json:
            return fail("usage", str(exc), ExitCode.USAGE, as_json=True)
        print(exc, file=sys.stderr)
        return ExitCode.USAGE
    try:
        if args.command == "check-config":  # its later checks run on the rest of the file too
            loaded, args.load_problems = load_config_and_problems(args.config)
        else:
            loaded = load_config(args.config)
        config = with_overrides(
            loaded,
            listen=getattr(args, "listen", None),
            state_dir=args.state_dir,
        )
        return _dispatch(args, config)
    except ConfigError as exc:
        return _config_failure(exc, as_json)
    except BrokenPipeError:
        raise
    except (StateUnusableError, StateLockedError) as exc:  # any command opening a store
        return fail(args.command, str(exc), ExitCode(exc.exit_code), as_json=as_json)
    except FileArgumentError as exc:  # a file named on the command line
        return fail(args.command, str(exc), exc.exit_code, as_json=as_json)
    except (MtaStsError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        return fail(args.command, f"{reason}{where}", ExitCode.TEMPFAIL, as_json=as_json)


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    if args.command != "report":
        result: int = args.handler(args, config)
        return result
    if not config.tlsrpt.enabled:
        reason = "TLS reporting is off (set [tlsrpt] enabled = true in the configuration)"
        return fail("report", reason, ExitCode.NOT_FOUND, as_json=getattr(args, "json", False))
    from mta_sts_policyd.service.tlsrpt_parts import report_context

    report_result: int = args.handler(args, report_context(config))
    return report_result


def _config_failure(exc: ConfigError, as_json: bool) -> int:
    if as_json:
        print_json({"ok": False, "error": "configuration error", "problems": list(exc.problems),
                    "exit_code": int(ExitCode.CONFIG)})  # fmt: skip
    else:
        for problem in exc.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
    return ExitCode.CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
