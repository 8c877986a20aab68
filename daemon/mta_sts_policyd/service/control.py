"""Operator control channel: a root-only unix socket for `cache list|show|purge|refresh`.

Why not the socketmap port: socketmap is unauthenticated (docs/conformance.md:
PF-socketmap-unauthenticated); cache changes need a channel that file permissions protect. One JSON
request per line, one JSON response per line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

from mta_sts_policyd.errors import FleetUnavailable
from mta_sts_policyd.net.unix_socket import BoundUnixSocket, bind_unix_socket
from mta_sts_policyd.policy.cache import CacheEntry
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.policy.shared_model import SharedView
from mta_sts_policyd.sts.keys import policy_domain_for_key

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
COMMANDS = {"list": "none", "show": "required", "purge": "optional", "refresh": "required"}
"""Each command and whether it takes a domain."""


STORE_WARNING = (
    "the store on disk cannot be written now: the policies are forgotten in memory and"
    " deleted from the store at the next flush that works (the log says why)"
)


class BadRequest(ValueError):
    """A request the server refuses; the message says what is wrong with it."""


def parse_request(request: object) -> tuple[str, str | None]:
    """(command, policy domain or None) of a decoded request, or BadRequest.

    Why so strict: the socket is root-only, but a wrong type must get an answer, not crash the
    handler, and a domain that is not a string (0, "", false) must never read as "no domain",
    which for `purge` means every domain."""
    if not isinstance(request, dict):
        raise BadRequest("expected a JSON object")
    unknown = sorted(str(key) for key in request if key not in ("command", "domain"))
    if unknown:
        raise BadRequest(f"unknown key {unknown[0]!r} (known: command, domain)")
    command = request.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        raise BadRequest(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
    takes, raw = COMMANDS[command], request.get("domain")
    if raw is None:
        if takes == "required":
            raise BadRequest(f"{command} needs a domain")
        return command, None
    if takes == "none":
        raise BadRequest(f"{command} takes no domain")
    if not isinstance(raw, str):
        raise BadRequest(f"domain must be a string, got {type(raw).__name__}")
    domain = policy_domain_for_key(raw)
    if domain is None:
        raise BadRequest(f"{raw!r} is not a domain that can have a policy")
    return command, domain


def entry_summary(entry: CacheEntry) -> dict[str, Any]:
    policy = entry.policy
    return {
        "domain": entry.domain,
        "mode": policy.mode.value if policy else None,
        "id": entry.policy_id,
        "fetched_at": entry.fetched_at or None,
        "expires_at": entry.expires_at or None,
        "txt_checked_at": entry.txt_checked_at or None,
        "last_used": entry.last_used or None,
        "origin": entry.origin or None,
        "failure": None if entry.failure is None else {
            "result_type": entry.failure[0].value, "reason": entry.failure[1],
        },
    }  # fmt: skip


def entry_details(entry: CacheEntry) -> dict[str, Any]:
    details = entry_summary(entry)
    policy = entry.policy
    details.update(
        max_age=policy.max_age if policy else None,
        mx=list(policy.mx) if policy else [],
        policy_lines=list(policy.lines) if policy else [],
        mx_hosts=list(entry.mx_hosts),
        reply=entry.reply.decode("utf-8", "replace"),
    )
    return details


class ControlServer:
    def __init__(self, resolver: PolicyResolver) -> None:
        self.resolver = resolver
        self._server: asyncio.AbstractServer | None = None
        self._bound: BoundUnixSocket | None = None

    async def start(self, path: Path) -> None:
        """Root only (mode 0600): file permissions are this channel's only protection."""
        bound = bind_unix_socket(path, socket.SOCK_STREAM, mode=0o600, what="control socket")
        try:
            self._server = await asyncio.start_unix_server(self._client, sock=bound.sock)
        except BaseException:
            bound.close()
            raise
        self._bound = bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._bound is not None:
            self._bound.remove_file()
            self._bound = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(await self._respond(reader)).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        """Every request gets an answer: bad ones say why, a failure inside says what failed."""
        try:
            line = await reader.readline()
            command, domain = parse_request(json.loads(line[:MAX_REQUEST]))
        except (ValueError, RecursionError) as exc:  # incl. a line over the stream limit
            return {"ok": False, "error": f"bad request: {exc}"}
        try:
            return await self.handle(command, domain)
        except Exception as exc:  # the daemon keeps serving; the operator sees the cause
            log.error("event=control-failed command=%s reason=%r", command, str(exc))
            return {"ok": False, "error": f"{command} failed: {exc}"}

    async def handle(self, command: str, domain: str | None) -> dict[str, Any]:
        """Carry out a request parse_request accepted."""
        cache = self.resolver.cache
        if command == "list":
            entries = sorted(cache.hot_entries(), key=lambda e: e.domain)
            stored = await asyncio.to_thread(cache.stored_count, cache.pending_deletions())
            return {"ok": True, "entries": [entry_summary(e) for e in entries],
                    "memory": len(entries), "stored": stored}  # fmt: skip
        if command == "purge":
            return await self._purge(domain)
        if domain is None:  # parse_request lets show and refresh through only with one
            raise BadRequest(f"{command} needs a domain")
        if command == "show":
            return await self._show(domain)
        entry = await self.resolver.refresh_domain(domain)
        if entry is None:  # no policy (negative-cached) or could not find out (DNS failed)
            return {"ok": True, "entry": None, "no_policy": self.resolver.known_absent(domain)}
        shown = await self._show(domain)  # what `show` says next: tier, origin, the fleet's
        return shown if shown["ok"] else {"ok": True, "entry": entry_details(entry)}

    async def _show(self, domain: str) -> dict[str, Any]:
        """One domain's entry and the tier it came from: memory, the local store, or (fleet
        mode, known to neither) the shared tier; with the fleet's own entry beside it."""
        cache, tier = self.resolver.cache, "memory"
        entry = cache.hot_set.get(domain)
        if entry is None:
            tier, entry = "store", await asyncio.to_thread(cache.load_from_store, domain)
        shared = await self._shared_view(domain)
        if entry is None and shared is not None and shared.policy is not None:
            tier, entry = "redis", CacheEntry(
                domain, policy_id=shared.policy.policy_id, policy=shared.policy.policy,
                fetched_at=shared.policy.fetched_at,
                expires_at=shared.policy.fetched_at + shared.policy.policy.max_age,
                origin="redis",
            )  # fmt: skip
        if entry is None:
            return {"ok": False, "error": f"{domain} is not in the cache", "missing": True}
        if not entry.reply:
            self.resolver.render(entry)  # store rows carry no reply bytes
        details = entry_details(entry)
        details["tier"] = tier
        if self.resolver.shared is not None:
            details["shared"] = shared_summary(shared)
        return {"ok": True, "entry": details}

    async def _shared_view(self, domain: str) -> SharedView | None:
        if self.resolver.shared is None:
            return None
        try:
            return await self.resolver.shared.view(domain)
        except FleetUnavailable:
            return None

    async def _purge(self, domain: str | None) -> dict[str, Any]:
        """Here, and in fleet mode also the shared entries (the other nodes are told). The
        store on disk is written at once (not at the next flush), so the purge holds even if
        the daemon is killed right after it."""
        cache = self.resolver.cache
        result: dict[str, Any] = {"ok": True, "purged": await self.resolver.purge(domain)}
        written = await asyncio.to_thread(cache.delete_stored, cache.pending_deletions())
        if not written:
            result["store_warning"] = STORE_WARNING
        if self.resolver.shared is not None:
            shared = await self.resolver.shared.purge(domain)
            result["shared_purged"] = shared
            if shared is None:
                result["warning"] = "Redis unavailable: the shared entries were not purged"
        return result


def shared_summary(view: SharedView | None) -> dict[str, Any] | None:
    """What the fleet holds for a domain (None: Redis could not be read)."""
    if view is None:
        return None
    policy = view.policy
    return {
        "id": policy.policy_id if policy else None,
        "mode": policy.policy.mode.value if policy else None,
        "fetched_at": policy.fetched_at if policy else None,
        "version": policy.version if policy else None,
        "failure": None if view.failure is None else {
            "id": view.failure.policy_id, "at": view.failure.at,
            "result_type": view.failure.result_type.value,
        },
        "no_policy_until": view.negative_until or None,
    }  # fmt: skip


def control_request(path: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Client side (the CLI): one request, one response; OSError when the daemon is not running."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    result: dict[str, Any] = json.loads(data)
    return result
