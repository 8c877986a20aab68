"""Command line: one command, subcommands; `main(argv)` so tests call it directly.

Exit codes: 0 found/ok, 1 no policy / nothing found, 64 usage, 69 another `serve` holds the
state directory, 73 state directory unusable (errors.StateUnusableError), 75 temporary
failure, 78 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mta_sts_policyd import __version__
from mta_sts_policyd.config.settings import (
    Config,
    config_as_dict,
    load_config,
    render_toml,
    with_overrides,
)
from mta_sts_policyd.errors import (
    ConfigError,
    MtaStsError,
    StateLockedError,
    StateUnusableError,
)

EXIT_OK, EXIT_NOTFOUND, EXIT_USAGE, EXIT_TEMPFAIL, EXIT_CONFIG = 0, 1, 64, 75, 78

Handler = Callable[[argparse.Namespace, Config], int]


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


# --- handlers ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.run import run_daemon

    return run_daemon(
        config, config_path=args.config, cli_listen=args.listen, cli_state_dir=args.state_dir
    )


def cmd_host(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.host.run import run_host
    from mta_sts_policyd.service.composition import host_settings
    from mta_sts_policyd.service.logsetup import setup_logging

    setup_logging(config.logging.level)
    return run_host(host_settings(config))


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
        print(f"query: cannot ask the daemon at {address}: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    status, _, data = reply.partition(" ")
    if args.json:
        _print_json({"domain": args.domain, "status": status, "data": data, "reply": reply})
    elif status == "OK":
        print(data)
    else:
        print(reply.rstrip() or status, file=sys.stderr)
    return {"OK": EXIT_OK, "NOTFOUND": EXIT_NOTFOUND}.get(status, EXIT_TEMPFAIL)


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
        if args.json:
            _print_json(result.as_json())
        else:
            print(result.as_text())
        return result.exit_code

    return asyncio.run(go())


def cmd_cache(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.composition import control_socket_path
    from mta_sts_policyd.service.control import control_request
    from mta_sts_policyd.sts.keys import policy_domain_for_key

    request: dict[str, Any] = {"command": args.cache_command}
    if getattr(args, "domain", None):
        if policy_domain_for_key(args.domain) is None:
            print(f"cache: {args.domain!r} cannot have a policy (parent-domain key, IP literal "
                  "or invalid name)", file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        request["domain"] = args.domain
    path = control_socket_path(config)
    try:
        response = control_request(path, request)
    except OSError as exc:
        print(f"cache: the daemon is not reachable at {path}: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except ValueError:
        print(f"cache: the daemon at {path} closed without an answer", file=sys.stderr)
        return EXIT_TEMPFAIL
    if args.json:
        _print_json(response)
    else:
        _print_cache_response(args.cache_command, response)
    if not response.get("ok"):
        return EXIT_NOTFOUND if response.get("missing") else EXIT_TEMPFAIL
    return EXIT_OK


def _print_cache_response(command: str, response: dict[str, Any]) -> None:
    if not response.get("ok"):
        print(f"cache {command}: {response.get('error')}", file=sys.stderr)
    elif command == "list":
        for e in response["entries"]:
            failure = f" failure={e['failure']['result_type']}" if e["failure"] else ""
            print(
                f"{e['domain']}\tmode={e['mode']}\tid={e['id']}\texpires={e['expires_at']}{failure}"
            )
        print(f"{len(response['entries'])} entries in memory")
    elif command == "purge":
        print(f"purged {response['purged']} entries")
    else:
        entry = response.get("entry")
        if entry is None:
            print("no policy")
            return
        for key, value in entry.items():
            shown = "\n    ".join(map(str, value)) if isinstance(value, list) else value
            print(f"{key}: {shown}")


def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.composition import check_report_files

    note = check_report_files(config, outside_ok=True)  # a broken DKIM key: ConfigError, 78
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        _print_json(config_as_dict(config))
    else:
        source = args.config or "(default path; built-in defaults where absent)"
        print(f"# effective configuration from {source}\n")
        print(render_toml(config))
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument("-c", "--config", type=Path, help="config file (TOML)")
    common.add_argument("--state-dir", help="state directory (overrides cache.state_dir)")
    return common


EXTENSION_COMMANDS = ("report", "probe", "generate", "check", "monitor", "reports-in", "host")
_CORE_COMMANDS = ("serve", "query", "resolve", "cache", "check-config")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """All subcommands; `report` and `probe` (which import dkimpy, cryptography and the SMTP
    stack) only when `command` is one of them or unknown, so `serve` stays lean in memory."""
    common = _common()
    reader = _Parser(add_help=False)
    reader.add_argument("--json", action="store_true", help="machine-readable output")
    parser = _Parser(prog="mta-sts-policyd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mta-sts-policyd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("serve", parents=[common], help="run the daemon")
    p.add_argument("--listen", action="append", help="HOST:PORT or unix:/path (repeatable)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("query", parents=[common, reader], help="ask the running daemon")
    p.add_argument("domain")
    p.add_argument("--socketmap", help="daemon address (default: first server.listen)")
    p.add_argument("--map", default="postfix", help="socketmap name sent (default postfix)")
    p.add_argument("--timeout", type=float, default=110.0)
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("resolve", parents=[common, reader], help="discover and explain")
    p.add_argument("domain")
    p.set_defaults(handler=cmd_resolve)

    p = sub.add_parser("cache", help="inspect or change the running daemon's cache")
    csub = p.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    csub.add_parser("list", parents=[common, reader]).set_defaults(handler=cmd_cache)
    for name, nargs in (("show", None), ("purge", "?"), ("refresh", None)):
        cp = csub.add_parser(name, parents=[common, reader])
        cp.add_argument("domain", nargs=nargs)
        cp.set_defaults(handler=cmd_cache)

    p = sub.add_parser("check-config", parents=[common, reader], help="validate and print config")
    p.set_defaults(handler=cmd_check_config)
    if command is None or command in EXTENSION_COMMANDS:
        _register_extensions(sub, common, reader)
    return parser


def _register_extensions(sub: Any, common: _Parser, reader: _Parser) -> None:
    """Subcommands owned by other modules (TLS-RPT reports, MX probe, own-domain tools)."""
    from mta_sts_policyd.cli import report as report_commands
    from mta_sts_policyd.cli import reports_in
    from mta_sts_policyd.cli.check import add_check_parser
    from mta_sts_policyd.cli.generate import add_generate_parser
    from mta_sts_policyd.cli.monitor import add_monitor_parser
    from mta_sts_policyd.cli.probe import add_probe_parser

    add_probe_parser(sub, common, reader)
    add_generate_parser(sub, common)
    add_check_parser(sub, common)
    add_monitor_parser(sub, common)
    report_commands.register(sub, parents=[common])
    reports_in.register(sub, common, reader)
    p = sub.add_parser("host", parents=[common], help="serve your policies over HTTPS")
    p.set_defaults(handler=cmd_host)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command if command in _CORE_COMMANDS else None)
    try:
        args = parser.parse_args(args_list)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    try:
        config = with_overrides(
            load_config(args.config),
            listen=getattr(args, "listen", None),
            state_dir=args.state_dir,
        )
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "report":
            from mta_sts_policyd.service.composition import report_context

            report_result: int = args.handler(args, report_context(config))
            return report_result
        result: int = args.handler(args, config)
        return result
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (StateUnusableError, StateLockedError) as exc:  # any command opening a store
        print(f"{args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
