"""`cache list|show|purge|refresh`: the running daemon's cache through its control socket."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from mta_sts_policyd.cli.exit_codes import ExitCode, answer_code
from mta_sts_policyd.cli.output import fail, iso_time, plain, print_json, relative
from mta_sts_policyd.config.settings import Config


def cmd_cache(args: argparse.Namespace, config: Config) -> int:
    from mta_sts_policyd.service.composition import control_socket_path
    from mta_sts_policyd.service.control import control_request
    from mta_sts_policyd.sts.keys import policy_domain_for_key

    command, as_json = f"cache {args.cache_command}", args.json
    request: dict[str, Any] = {"command": args.cache_command}
    if getattr(args, "domain", None):
        if policy_domain_for_key(args.domain) is None:
            reason = (
                f"{args.domain!r} cannot have a policy "
                "(parent-domain key, IP literal or invalid name)"
            )  # no policy: 1, as `query` and `resolve` answer the same key
            return fail(command, reason, ExitCode.NOT_FOUND, as_json=as_json)
        request["domain"] = args.domain
    path = control_socket_path(config)
    try:
        response = control_request(path, request)
    except OSError as exc:
        reason = f"the daemon is not reachable at {path}: {exc.strerror or exc}"
        return fail(command, reason, ExitCode.TEMPFAIL, as_json=as_json)
    except ValueError:
        reason = f"the daemon at {path} closed without an answer"
        return fail(command, reason, ExitCode.TEMPFAIL, as_json=as_json)
    code = response_code(response)
    if request.get("domain") and response.get("purged") == 0 and not response.get("shared_purged"):
        code = ExitCode.NOT_FOUND  # `purge DOMAIN`: nothing was stored for it
    if as_json:
        if code is ExitCode.TEMPFAIL and response.get("ok"):  # answered, but nothing decided
            response = {**response, "ok": False, "error": "could not find out (discovery failed)"}
        print_json({**response, "exit_code": int(code)})
    else:
        print_cache_response(args.cache_command, response, code, time.time())
    return code


def response_code(response: dict[str, Any]) -> ExitCode:
    """The same answer, the same code as `query` and `resolve` (cli/exit_codes.py)."""
    if not response.get("ok"):
        return ExitCode.NOT_FOUND if response.get("missing") else ExitCode.TEMPFAIL
    if "entry" not in response:
        return ExitCode.OK  # list, purge
    entry = response["entry"]
    if entry is None:
        return ExitCode.NOT_FOUND if response.get("no_policy") else ExitCode.TEMPFAIL
    code = answer_code(entry.get("reply", ""))
    if code is ExitCode.NOT_FOUND and entry.get("mode") is None and entry.get("failure"):
        return ExitCode.TEMPFAIL  # no policy known, and discovery failed: could not find out
    return code


def print_cache_response(
    command: str, response: dict[str, Any], code: ExitCode, now: float
) -> None:
    if not response.get("ok"):
        print(f"cache {command}: {response.get('error')}", file=sys.stderr)
    elif command == "list":
        _print_list(response, now)
    elif command == "purge":
        print(f"purged {response['purged']} {_plural(response['purged'], 'policy', 'policies')}")
        if "store_warning" in response:
            print(f"cache purge: {response['store_warning']}", file=sys.stderr)
        if "shared_purged" in response:
            shared = response["shared_purged"]
            print(response["warning"] if shared is None else
                  f"fleet: {shared} shared {_plural(shared, 'entry', 'entries')} deleted,"
                  " the other nodes told")  # fmt: skip
    elif response.get("entry") is None:
        what = "no policy" if code is ExitCode.NOT_FOUND else "could not find out (DNS failed)"
        print(what)
    else:
        _print_entry(response["entry"], now)


def _shared_line(shared: dict[str, Any] | None, now: float) -> str:
    """What Redis holds for the domain (fleet mode)."""
    if shared is None:
        return "Redis unavailable"
    if shared.get("id") is None:
        parts = ["no shared policy"]
    else:
        fetched = shared["fetched_at"]
        parts = [f"id {shared['id']}, {shared['mode']}, fetched {iso_time(fetched)} "
                 f"({relative(fetched, now)}), version {shared['version']}"]  # fmt: skip
    if shared.get("failure"):
        parts.append(f"failure of id {shared['failure']['id']}: {shared['failure']['result_type']}")
    if shared.get("no_policy_until"):
        parts.append(f"no policy published until {iso_time(shared['no_policy_until'])}")
    return "; ".join(parts)


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _print_list(response: dict[str, Any], now: float) -> None:
    rows = [("DOMAIN", "MODE", "ID", "EXPIRES", "TXT CHECKED", "FAILURE")]
    for e in response["entries"]:
        failure = e["failure"]["result_type"] if e["failure"] else "-"
        rows.append((e["domain"], plain(e["mode"]), plain(e["id"]),
                     relative(e["expires_at"], now), relative(e["txt_checked_at"], now),
                     failure))  # fmt: skip
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    memory, stored = response.get("memory", len(response["entries"])), response.get("stored", 0)
    print(f"{memory} in memory, {stored} in the store on disk "
          f"(the store holds every cached policy; memory the most recently used)")  # fmt: skip


def _print_entry(entry: dict[str, Any], now: float) -> None:
    failure = entry.get("failure")
    fields: list[tuple[str, str]] = [
        ("domain", entry["domain"]),
        ("mode", plain(entry.get("mode"))),
        ("id", plain(entry.get("id"))),
        ("max_age", plain(entry.get("max_age"))),
        ("mx", plain(entry.get("mx"))),
        ("mx hosts", plain(entry.get("mx_hosts"))),
    ]
    for key, label in (("fetched_at", "fetched"), ("expires_at", "expires"),
                       ("txt_checked_at", "txt checked"), ("last_used", "last used")):  # fmt: skip
        value = entry.get(key)
        fields.append((label, f"{iso_time(value)} ({relative(value, now)})" if value else "-"))
    fields.append(("failure", f"{failure['result_type']}: {failure['reason']}" if failure else "-"))
    fields.append(("reply", entry.get("reply", "").rstrip() or "-"))
    if "tier" in entry:
        fields.append(("tier", entry["tier"]))
        fields.append(("origin", plain(entry.get("origin"))))
    if "shared" in entry:
        fields.append(("fleet", _shared_line(entry["shared"], now)))
    for label, value in fields:
        print(f"{label + ':':<13}{value}")
    lines = entry.get("policy_lines") or []
    for n, line in enumerate(lines):
        print(f"{'policy:' if n == 0 else '':<13}{line}")
