"""The operator control channel (control.py): one JSON request per line on a root-only unix socket.

In-process ControlServer over a real unix socket, with a real PolicyResolver against the loopback
DNS/HTTPS servers and a real store. The CLI side (`cache ...` exit codes and output) is in
test_cli.py; this file covers the protocol and what each command does to memory and disk.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sqlite3
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import StsWorld
from mta_sts_policyd.errors import SocketInUseError
from mta_sts_policyd.policy.cache import PolicyCache, PolicyStore
from mta_sts_policyd.policy.resolver import PolicyResolver
from mta_sts_policyd.service.control import (
    STORE_WARNING,
    BadRequest,
    ControlServer,
    control_request,
    parse_request,
)
from support.resolver_world import lookup_settings

ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
ENFORCE_REPLY = b"OK secure match=mail.example.test servername=hostname"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="mtasts-c-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Setup:
    def __init__(self, resolver: PolicyResolver, control: ControlServer, path: Path) -> None:
        self.resolver = resolver
        self.control = control
        self.path = path

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(control_request, self.path, request, 10.0)

    async def raw(self, line: bytes) -> bytes:
        """Send bytes as they are; return everything the server sends before closing."""

        def go() -> bytes:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(self.path))
                sock.sendall(line)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)

        return await asyncio.to_thread(go)

    def flush(self) -> None:
        cache = self.resolver.cache
        cache.write_batch(*cache.take_batch())

    def stored(self) -> list[str]:
        return self.resolver.cache.stored_domains()


@pytest.fixture
async def setup(sts_world: StsWorld, short_dir: Path) -> AsyncIterator[Setup]:
    sts_world.publish("example.test", ENFORCE)
    sts_world.publish("other.test", ENFORCE.replace("mail.example.test", "mx.other.test"))
    cache = PolicyCache(PolicyStore(short_dir / "policies.sqlite"), memory_entries=1)
    settings = lookup_settings(cold_wait=2.0, exact_wildcards=False)
    resolver = PolicyResolver(sts_world.discovery(), cache, settings)
    control = ControlServer(resolver)
    path = short_dir / "control.sock"
    await control.start(path)
    yield Setup(resolver, control, path)
    await control.close()
    await resolver.wait_idle()
    cache.close()


async def test_socket_is_owner_only_and_removed_on_close(setup: Setup) -> None:
    """docs/conformance.md: PF-socketmap-unauthenticated: socketmap is unauthenticated; cache
    changes need a channel file modes protect."""
    assert stat.S_ISSOCK(setup.path.stat().st_mode)
    assert stat.S_IMODE(setup.path.stat().st_mode) == 0o600
    await setup.control.close()
    assert not setup.path.exists()
    with pytest.raises(FileNotFoundError):
        await setup.ask({"command": "list"})


async def test_a_stale_socket_file_is_replaced(sts_world: StsWorld, short_dir: Path) -> None:
    path = short_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves
    resolver = PolicyResolver(sts_world.discovery(), PolicyCache(None), lookup_settings())
    control = ControlServer(resolver)
    await control.start(path)
    try:
        assert await asyncio.to_thread(control_request, path, {"command": "list"}) == {
            "ok": True,
            "entries": [],
            "memory": 0,
            "stored": 0,
        }
    finally:
        await control.close()


async def test_a_live_control_socket_is_not_taken_over(setup: Setup, sts_world: StsWorld) -> None:
    """A second daemon on the same state directory fails instead of stealing the channel."""
    resolver = PolicyResolver(sts_world.discovery(), PolicyCache(None), lookup_settings())
    with pytest.raises(SocketInUseError, match=r"control socket .* is in use by another process"):
        await ControlServer(resolver).start(setup.path)
    assert (await setup.ask({"command": "list"}))["ok"] is True


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b'{"domain": "example.test"}\n',  # no command
        b'["list"]\n',
        b'"list"\n',
        b"null\n",
        b"[" * 4000 + b"\n",  # nested deeper than the JSON decoder's recursion limit
        b"\xff\xfe\n",
        b'{"command": "list", "pad": "' + b"x" * 5000 + b'"}\n',  # over the request cap
    ],
)
async def test_bad_requests_get_an_error_reply(setup: Setup, line: bytes) -> None:
    reply = await setup.raw(line)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1
    answer = json.loads(reply)
    assert answer["ok"] is False
    assert answer["error"].startswith("bad request")


HOSTILE = [
    {"command": "show", "domain": 5},
    {"command": "show", "domain": ["example.test"]},
    {"command": "refresh", "domain": {"a": 1}},
    {"command": "purge", "domain": 0},
    {"command": "purge", "domain": ""},
    {"command": "purge", "domain": False},
    {"command": "purge", "domain": []},
    {"command": "list", "domain": "example.test"},
    {"command": ["list"]},
    {"command": {"list": 1}},
    {"command": None},
    {"command": 1.5},
    {"command": "list", "extra": 1},
]


@pytest.mark.fault
@pytest.mark.parametrize("request_", HOSTILE, ids=[json.dumps(r) for r in HOSTILE])
async def test_requests_of_the_wrong_shape_are_answered_and_purge_nothing(
    setup: Setup, request_: dict[str, Any]
) -> None:
    """Issue 11 item 19: a non-string domain crashed the handler (no answer); an empty or
    false domain read as "no domain", which for purge is every domain."""
    await setup.resolver.answer("postfix", "example.test")
    answer = await setup.ask(request_)
    assert answer["ok"] is False
    assert answer["error"].startswith("bad request: ")
    assert [e.domain for e in setup.resolver.cache.hot_entries()] == ["example.test"]
    assert (await setup.ask({"command": "list"}))["ok"] is True  # still serving


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
REQUESTS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"command": st.sampled_from(["list", "show", "purge", "refresh", "x"]) | JSON_VALUES},
        optional={"domain": JSON_VALUES, "other": JSON_VALUES},
    ),
)


@pytest.mark.fault
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_=REQUESTS)
def test_any_json_value_gets_exactly_one_json_answer(request_: Any) -> None:
    """A fuzzed request (no network: parse_request must refuse or the answer be a plain reply)."""
    try:
        command, domain = parse_request(request_)
    except BadRequest as exc:
        assert str(exc)
        return
    assert command in ("list", "show", "purge", "refresh")
    assert domain is None or isinstance(domain, str)
    assert isinstance(request_, dict) and set(request_) <= {"command", "domain"}
    if command == "purge" and domain is None:
        assert request_.get("domain") is None  # only an absent or null domain means "all"


@pytest.mark.fault
@settings(max_examples=60, deadline=None)
@given(line=st.binary(max_size=300))
def test_random_bytes_on_the_socket_get_one_answer(line: bytes) -> None:
    async def go() -> bytes:
        resolver = PolicyResolver(None, PolicyCache(None), lookup_settings())  # type: ignore[arg-type]
        control = ControlServer(resolver)
        path = Path(tempfile.mkdtemp(prefix="mtasts-f-")) / "c.sock"
        await control.start(path)
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(line.replace(b"\n", b" ") + b"\n")
            reply = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return reply
        finally:
            await control.close()
            shutil.rmtree(path.parent, ignore_errors=True)

    reply = asyncio.run(go())
    assert reply.count(b"\n") == 1
    assert isinstance(json.loads(reply)["ok"], bool)


async def test_one_request_per_connection(setup: Setup) -> None:
    reply = await setup.raw(b'{"command": "list"}\n{"command": "purge"}\n')
    assert [json.loads(line) for line in reply.splitlines()] == [
        {"ok": True, "entries": [], "memory": 0, "stored": 0}
    ]


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"command": "frobnicate"}, "unknown command 'frobnicate' (known: list, show, purge, "),
        ({"command": "show"}, "show needs a domain"),
        ({"command": "refresh"}, "refresh needs a domain"),
        ({"command": "show", "domain": ".example.test"}, "is not a domain that can have a policy"),
        ({"command": "purge", "domain": "[192.0.2.1]"}, "is not a domain that can have a policy"),
    ],
)
async def test_wrong_commands_and_keys(setup: Setup, request_: dict[str, Any], error: str) -> None:
    answer = await setup.ask(request_)
    assert answer["ok"] is False
    assert error in answer["error"]
    assert "missing" not in answer  # only "not in the cache" means exit 1 in the CLI


async def test_show_reads_a_domain_evicted_from_memory_from_the_store(setup: Setup) -> None:
    """memory_entries = 1: the older domain lives on disk only, and show still finds it."""
    resolver = setup.resolver
    assert await resolver.answer("postfix", "example.test") == ENFORCE_REPLY
    setup.flush()
    assert (await resolver.answer("postfix", "other.test")).startswith(b"OK secure")
    assert [e.domain for e in resolver.cache.hot_entries()] == ["other.test"]
    listed = await setup.ask({"command": "list"})
    assert [e["domain"] for e in listed["entries"]] == ["other.test"]  # memory only
    shown = await setup.ask({"command": "show", "domain": "Example.Test."})
    assert shown["ok"] is True
    assert shown["entry"]["domain"] == "example.test"
    assert shown["entry"]["reply"] == ENFORCE_REPLY.decode()  # what Postfix would get
    assert [e.domain for e in resolver.cache.hot_entries()] == ["other.test"]


async def test_purge_removes_from_memory_and_disk(setup: Setup) -> None:
    resolver = setup.resolver
    await resolver.answer("postfix", "example.test")
    setup.flush()
    await resolver.answer("postfix", "other.test")  # example.test is now on disk only
    setup.flush()
    assert sorted(setup.stored()) == ["example.test", "other.test"]
    assert await setup.ask({"command": "purge", "domain": "example.test"}) == {
        "ok": True,
        "purged": 1,
    }
    setup.flush()
    assert setup.stored() == ["other.test"]
    missing = await setup.ask({"command": "show", "domain": "example.test"})
    assert missing == {"ok": False, "error": "example.test is not in the cache", "missing": True}
    assert await setup.ask({"command": "purge", "domain": "unknown.test"}) == {
        "ok": True,
        "purged": 0,
    }
    assert await setup.ask({"command": "purge"}) == {"ok": True, "purged": 1}
    setup.flush()
    assert setup.stored() == []


async def test_a_purge_is_on_disk_and_out_of_the_count_at_once(setup: Setup) -> None:
    """Not at the next flush: `list` right after `purge` counts the domain gone, and the file
    a restart reads no longer holds it (the daemon may be killed before any flush)."""
    resolver = setup.resolver
    await resolver.answer("postfix", "example.test")
    setup.flush()
    await resolver.answer("postfix", "other.test")  # example.test is now on disk only
    setup.flush()
    assert (await setup.ask({"command": "list"}))["stored"] == 2
    purged = await setup.ask({"command": "purge", "domain": "example.test"})
    assert purged == {"ok": True, "purged": 1}
    listed = await setup.ask({"command": "list"})  # no flush in between
    assert (listed["memory"], listed["stored"]) == (1, 1)
    assert _keys_on_disk(resolver.cache) == ["other.test"]
    assert await setup.ask({"command": "purge", "domain": "example.test"}) == {
        "ok": True,
        "purged": 0,
    }


@pytest.mark.fault
async def test_a_purge_the_store_cannot_take_now_is_counted_gone_and_written_later(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """The store's writer is gone (what an exception escaping sqlitedict's loop leaves): the
    purge holds in memory, says so, `list` and a second purge see it done, and the next flush
    deletes the row."""
    resolver = setup.resolver
    await resolver.answer("postfix", "example.test")
    setup.flush()
    await resolver.answer("postfix", "other.test")
    setup.flush()
    store = resolver.cache.store
    assert store is not None
    writer = store._writer._db
    assert writer is not None
    writer.conn.close(force=True)
    writer.conn.join(5)
    purged = await setup.ask({"command": "purge", "domain": "example.test"})
    assert purged == {"ok": True, "purged": 1, "store_warning": STORE_WARNING}
    assert "event=store-purge-failed entries=1" in caplog.text
    assert sorted(_keys_on_disk(resolver.cache)) == ["example.test", "other.test"]
    assert (await setup.ask({"command": "list"}))["stored"] == 1
    again = await setup.ask({"command": "purge", "domain": "example.test"})
    assert again["purged"] == 0
    setup.flush()  # a new writer connection
    assert _keys_on_disk(resolver.cache) == ["other.test"]
    assert await setup.ask({"command": "purge", "domain": "example.test"}) == {
        "ok": True,
        "purged": 0,
    }


def _keys_on_disk(cache: PolicyCache) -> list[str]:
    """What a restart would read: the file, through a connection of its own."""
    assert cache.store is not None
    with closing(sqlite3.connect(cache.store.path)) as conn:
        return [key for (key,) in conn.execute('SELECT key FROM "policies" ORDER BY key')]


async def test_refresh_discovers_now_past_back_off(setup: Setup, sts_world: StsWorld) -> None:
    """RFC 8461 §3.3 back-off is for automatic retries; an operator's refresh goes to the network at
    once."""
    site = sts_world.https.site_for("mta-sts.example.test")
    assert site is not None
    site.status = 500
    assert await setup.resolver.answer("postfix", "example.test") == b"NOTFOUND "
    shown = await setup.ask({"command": "show", "domain": "example.test"})
    assert shown["entry"]["failure"]["result_type"] == "sts-policy-fetch-error"
    site.status = 200
    refreshed = await setup.ask({"command": "refresh", "domain": "example.test"})
    assert refreshed["ok"] is True
    assert refreshed["entry"]["mode"] == "enforce" and refreshed["entry"]["failure"] is None
    assert refreshed["entry"]["reply"] == ENFORCE_REPLY.decode()
    assert refreshed == await setup.ask({"command": "show", "domain": "example.test"})
    assert refreshed["entry"]["tier"] == "memory"  # as `show` says it, not a shorter view
    assert sts_world.https.request_count("mta-sts.example.test") == 2
    assert await setup.resolver.answer("postfix", "example.test") == ENFORCE_REPLY


async def test_refresh_of_a_domain_without_policy(setup: Setup) -> None:
    assert await setup.ask({"command": "refresh", "domain": "nothing.test"}) == {
        "ok": True,
        "entry": None,
        "no_policy": True,
    }


async def test_refresh_when_dns_fails_is_not_no_policy(setup: Setup, sts_world: StsWorld) -> None:
    """`cache refresh` must tell "no policy" (exit 1) from "could not find out" (exit 75)."""
    sts_world.dns.fail("_mta-sts.broken.test", "servfail")
    assert await setup.ask({"command": "refresh", "domain": "broken.test"}) == {
        "ok": True,
        "entry": None,
        "no_policy": False,
    }


async def test_concurrent_clients(setup: Setup) -> None:
    await setup.resolver.answer("postfix", "example.test")
    answers = await asyncio.gather(
        *(setup.ask({"command": "show", "domain": "example.test"}) for _ in range(20))
    )
    assert all(a["ok"] and a["entry"]["id"] == "1" for a in answers)
