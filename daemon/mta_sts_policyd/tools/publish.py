"""`publish D`: a policy change in the order RFC 8461 §3.1/§5 needs, so no sender ever sees a
new id before the new file is served.

1. the file goes into the host's policy folder (atomically) - only files the parser accepts;
2. it is fetched back over HTTPS from every address of `mta-sts.D`, the way a sender fetches
   it, until every address serves exactly these bytes (the host re-reads its folder on change);
3. only then the TXT record is announced (printed, or handed to a hook command);
4. then every authoritative name server of D's zone is asked until each answers the new id.

A step that does not complete before the deadline stops the run with what was seen; nothing
later happens (an unconfirmed file never gets its TXT record).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mta_sts_policyd.discovery.policy_fetch import PolicyFetcher
from mta_sts_policyd.errors import DnsLookupError, PolicyFetchError
from mta_sts_policyd.net.dns_client import DnsClient, make_resolver
from mta_sts_policyd.sts.model import TxtRecord
from mta_sts_policyd.sts.txt import select_sts_record
from mta_sts_policyd.tools.check.gather import addresses

POLL = 0.5


@dataclass
class Progress:
    """What the run saw, step by step (printed as it goes, returned at the end)."""

    served_at: list[str] = field(default_factory=list)
    announced: bool = False
    confirmed_by: list[str] = field(default_factory=list)
    problem: str | None = None


@dataclass(frozen=True)
class PublishReach:
    dns: DnsClient
    fetcher: PolicyFetcher
    dns_port: int = 53
    """Port of the authoritative servers (test set-ups)."""
    timeout: float = 300.0
    """For each of the two waits: served everywhere, confirmed everywhere."""


Say = Callable[[str], None]


async def confirm_served(
    domain: str, body: bytes, reach: PublishReach, say: Say, previous: bytes | None = None
) -> str | None:
    """Wait until every address of mta-sts.D serves `body`; None, or what went wrong.

    `previous` is the file that was in the policy folder before, to tell "not taken yet"
    from "some other file" when an address does not serve `body`.
    """
    host = f"mta-sts.{domain}"
    try:
        found, _ = await addresses(host, reach.dns)
    except DnsLookupError as exc:
        return f"{host}: {exc.reason}"
    if not found:
        return f"{host} has no A or AAAA record: nothing serves the policy"
    last: dict[str, str] = {}

    async def one(address: str) -> bool:
        try:
            answer = await reach.fetcher.exchange(domain, address)
        except PolicyFetchError as exc:
            last[address] = exc.reason
            return False
        if answer.status == 200 and bytes(answer.body) == body:
            return True
        last[address] = not_the_new_file(domain, answer.status, bytes(answer.body), previous)
        return False

    pending = list(found)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + reach.timeout
    while pending:
        done = await asyncio.gather(*(one(a) for a in pending))
        for address, ok in zip(list(pending), done, strict=True):
            if ok:
                say(f"served: https://{host}/.well-known/mta-sts.txt at {address} has the new file")
                pending.remove(address)
        if pending and loop.time() >= deadline:
            return "; ".join(f"{a}: {last.get(a, 'no answer')}" for a in pending)
        if pending:
            await asyncio.sleep(POLL)
    return None


def not_the_new_file(domain: str, status: int, served: bytes, previous: bytes | None) -> str:
    """What an address serves instead of the new file, and the likely reason."""
    seen = f"status {status}, {len(served)} bytes"
    if status == 404:
        return (
            f"{seen}: the host serves no policy for {domain} (not re-read yet, or it reads "
            "another folder than [host] policy_dir)"
        )
    if status == 200 and previous is not None and served == previous:
        return (
            f"{seen}: still the previous file; the host re-reads [host] policy_dir every "
            "poll_interval, and logs event=policy-file-refused for a file it will not serve"
        )
    return f"{seen}, not the new file (another host, or another policy folder?)"


async def authoritative_servers(domain: str, reach: PublishReach) -> list[str]:
    """Addresses of the name servers of the zone holding `_mta-sts.D` (the nearest NS set)."""
    labels = domain.split(".")
    for start in range(len(labels) - 1):
        zone = ".".join(labels[start:])
        try:
            answer = await reach.dns.records(zone, "NS")
        except DnsLookupError:
            continue
        if answer.texts:
            found: list[str] = []
            for host in answer.texts:
                try:
                    found += (await addresses(host.rstrip("."), reach.dns))[0]
                except DnsLookupError:
                    continue
            return list(dict.fromkeys(found))
    return []


async def confirm_published(
    domain: str, record_id: str, reach: PublishReach, say: Say, resolver_timeout: float = 3.0
) -> str | None:
    """Wait until every authoritative server answers `_mta-sts.D` with `record_id`."""
    servers = await authoritative_servers(domain, reach)
    if not servers:
        return f"no name servers found for {domain}'s zone"
    clients = {
        s: DnsClient(make_resolver([_spec(s, reach.dns_port)], resolver_timeout)) for s in servers
    }
    seen: dict[str, str] = {}
    pending = list(servers)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + reach.timeout
    while pending:
        for server in list(pending):
            seen[server] = await _id_at(clients[server], domain)
            if seen[server] == record_id:
                say(f"confirmed: name server {server} answers {record_id}")
                pending.remove(server)
        if pending and loop.time() >= deadline:
            return "; ".join(f"{s} still answers {seen[s]}" for s in pending)
        if pending:
            await asyncio.sleep(POLL)
    return None


async def _id_at(client: DnsClient, domain: str) -> str:
    try:
        answer = await client.records(f"_mta-sts.{domain}", "TXT")
    except DnsLookupError as exc:
        return f"nothing ({exc.reason})"
    record = select_sts_record([list(s) for s in answer.strings])
    return f"id={record.id}" if isinstance(record, TxtRecord) else "no valid record"


def _spec(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


Announce = Callable[[str, str], Awaitable[str | None]]
"""(TXT name, TXT value) -> None, or why the record could not be handed on (the hook failed)."""


async def publish(
    domain: str,
    body: bytes,
    record_id: str,
    write: Callable[[bytes], None],
    announce: Announce,
    reach: PublishReach,
    say: Say,
    previous: bytes | None = None,
) -> Progress:
    """Steps 1-4 of the module docstring; stops at the first that does not complete.
    `previous` is the file `write` replaces (None: there was none)."""
    progress = Progress()
    write(body)
    problem = await confirm_served(domain, body, reach, say, previous)
    if problem is not None:
        progress.problem = f"the new file is not served everywhere, TXT not changed: {problem}"
        return progress
    problem = await announce(f"_mta-sts.{domain}", f"v=STSv1; id={record_id}")
    if problem is not None:
        progress.problem = problem
        return progress
    progress.announced = True
    problem = await confirm_published(domain, f"id={record_id}", reach, say)
    progress.problem = problem and f"not yet published everywhere: {problem}"
    return progress
