"""The running daemon as a real process: `mta-sts-policyd serve` against loopback DNS and HTTPS.

Covers what only the assembled daemon can show (issue 3, "Tests"): the real Postfix client
(`postmap -q` over inet and unix sockets, docs/conformance.md: PF-socketmap-real-client), the
persistent cache across restarts, SIGTERM drain and flush, SIGHUP reload (docs/conformance.md:
PF-sts-attributes attributes switched on without a refetch), a corrupt store, systemd socket
activation and sd_notify, and connection handling (RFC 8461 §5.1; docs/conformance.md:
PF-socketmap-sequential, PF-socketmap-framing-error). Row ids are those of docs/conformance.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import StsWorld
from mta_sts_policyd.postfix.socketmap import NetstringDecoder, encode_netstring
from support.daemon_process import (
    POSTMAP,
    DaemonProcess,
    postfix_config_dir,
    postmap,
    wait_until,
)
from support.ports import free_port

ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
ENFORCE_REPLY = b"OK secure match=mail.example.test servername=hostname"
NOTFOUND = b"NOTFOUND "
STS_ATTRIBUTES = (
    b" policy_type=sts policy_domain=example.test mx_host_pattern=mail.example.test"
    b" { policy_string = version: STSv1 } { policy_string = mode: enforce }"
    b" { policy_string = mx: mail.example.test } { policy_string = max_age: 86400 }"
)
needs_postmap = pytest.mark.skipif(not os.path.exists(POSTMAP), reason="postmap not installed")


@pytest.fixture
def world(sts_world: StsWorld) -> StsWorld:
    """example.test publishes an enforce policy; testing.test a testing one; nothing.test none."""
    sts_world.publish("example.test", ENFORCE)
    sts_world.publish("testing.test", ENFORCE.replace("enforce", "testing"))
    return sts_world


@pytest.fixture
def daemon(world: StsWorld) -> Iterator[DaemonProcess]:
    with DaemonProcess.for_servers(world.dns, world.https) as process:
        yield process


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for unix socket paths (at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mtasts-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def postfix_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return postfix_config_dir(tmp_path_factory.mktemp("postfix"))


def fetches(world: StsWorld, domain: str = "example.test") -> int:
    return world.https.request_count(f"mta-sts.{domain}")


def stored_rows(path: Path) -> dict[str, dict[str, object]]:
    """The store read with plain sqlite3 + json (independent of the daemon's cache code)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT key, value FROM policies").fetchall()
    finally:
        conn.close()
    return {key: json.loads(value) for key, value in rows}


def break_servers(world: StsWorld) -> None:
    """DNS answers SERVFAIL and the policy host 500 for example.test from now on."""
    world.dns.fail("_mta-sts.example.test", "servfail")
    world.dns.fail("mta-sts.example.test", "servfail")
    site = world.https.site_for("mta-sts.example.test")
    assert site is not None
    site.status = 500


# --- the real client: Postfix's postmap (docs/conformance.md: PF-socketmap-real-client) -----------


@needs_postmap
def test_postmap_over_tcp(daemon: DaemonProcess, world: StsWorld, postfix_dir: Path) -> None:
    daemon.start()
    table = f"socketmap:inet:{daemon.address}:postfix"
    assert postmap(postfix_dir, table, "example.test") == (
        0,
        "secure match=mail.example.test servername=hostname\n",
    )
    assert postmap(postfix_dir, table, "nothing.test") == (1, "")  # RFC 8461 §3.1
    assert postmap(postfix_dir, table, "testing.test") == (1, "")  # RFC 8461 §5
    txt_queries = world.dns.query_count("_mta-sts.example.test")
    # RFC 8461 §3.4: parent retry key
    assert postmap(postfix_dir, table, ".example.test") == (1, "")
    assert world.dns.query_count("_mta-sts.example.test") == txt_queries  # no lookup for it
    assert fetches(world) == 1


@needs_postmap
def test_postmap_over_unix_socket(
    daemon: DaemonProcess, postfix_dir: Path, short_dir: Path
) -> None:
    path = short_dir / "policy.sock"
    daemon.write_config(server={"listen": [f"unix:{path}"], "unix_mode": "0600"})
    daemon.start()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    table = f"socketmap:unix:{path}:postfix"
    assert postmap(postfix_dir, table, "example.test") == (
        0,
        "secure match=mail.example.test servername=hostname\n",
    )
    assert postmap(postfix_dir, table, ".example.test") == (1, "")
    assert postmap(postfix_dir, table, "nothing.test") == (1, "")
    assert daemon.stop() == 0
    assert not path.exists()  # the daemon removes its own socket file


# --- persistence and signals -------------------------------------------------------------------


def test_restart_restores_the_cache_without_network(daemon: DaemonProcess, world: StsWorld) -> None:
    """RFC 8461 §3.3, §5.1: a restart keeps unexpired policies; failing DNS and HTTPS change
    nothing."""
    daemon.start()
    assert daemon.query("example.test") == ENFORCE_REPLY
    assert daemon.stop() == 0
    break_servers(world)
    world.https.reset()
    daemon.start()
    assert "event=cache-loaded entries=1 " in daemon.log()
    assert daemon.query("example.test") == ENFORCE_REPLY
    assert daemon.query("[example.test]:25") == ENFORCE_REPLY  # RFC 8461 §3.4: same cache entry
    assert fetches(world) == 0


def test_sigterm_flushes_every_entry_and_exits_0_in_time(
    daemon: DaemonProcess, world: StsWorld
) -> None:
    """Write-behind off (flush_interval of an hour): only the shutdown flush can store entries."""
    world.publish("other.test", ENFORCE.replace("mail.example.test", "mx.other.test"))
    daemon.write_config(cache={"flush_interval": 3600.0})
    daemon.start()
    for key in ("example.test", "other.test", "testing.test", "nothing.test"):
        daemon.query(key)
    idle = socket.create_connection(("127.0.0.1", daemon.port))  # like Postfix's kept connection
    started = time.monotonic()
    code = daemon.stop(signal.SIGTERM, timeout=10)
    elapsed = time.monotonic() - started
    idle.close()
    assert code == 0
    assert elapsed < 5, f"SIGTERM took {elapsed:.1f}s with an idle connection open"
    assert "event=stopped" in daemon.log()
    rows = stored_rows(daemon.store_path)
    assert {"example.test", "other.test", "testing.test"} <= set(rows)
    assert rows["example.test"]["id"] == "1"
    policy = rows["other.test"]["policy"]
    assert isinstance(policy, dict) and policy["mx"] == ["mx.other.test"]


async def test_sigterm_drains_an_answer_in_flight(daemon: DaemonProcess, world: StsWorld) -> None:
    """SIGTERM during a first fetch (policy host answers after 1 s): the reply still arrives."""
    site = world.https.site_for("mta-sts.example.test")
    assert site is not None
    site.delay = 1.0
    # The fetch must end within cold_wait however loaded the machine is (2 s by default here).
    daemon.write_config(cache={"cold_wait": 15.0})
    await asyncio.to_thread(daemon.start)
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(encode_netstring(b"postfix example.test"))
    assert await asyncio.to_thread(wait_until, lambda: fetches(world) > 0)
    daemon.send(signal.SIGTERM)
    assert await exchange(reader, writer, None) == ENFORCE_REPLY
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
    assert daemon.proc is not None
    # The SIGTERM above is the only one: stop() now would send a second while the daemon is
    # already exiting (signal handlers gone), and that one kills it (exit -15).
    assert await asyncio.to_thread(daemon.proc.wait, 15) == 0
    assert await asyncio.to_thread(daemon.stop) == 0
    assert "example.test" in stored_rows(daemon.store_path)


def test_sighup_reload_switches_on_sts_attributes_keeping_the_cache(
    daemon: DaemonProcess, world: StsWorld
) -> None:
    """docs/conformance.md: PF-sts-attributes: sts_attributes false -> true by SIGHUP; cached
    replies are re-rendered, no refetch."""
    daemon.start()
    assert daemon.query("example.test") == ENFORCE_REPLY
    old_address = daemon.address
    daemon.port = free_port()  # a listener change needs a restart: warned about, not applied
    daemon.write_config(server={"sts_attributes": True, "listen": [daemon.address]})
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("event=reloaded entries=1")
    assert "event=reload-needs-restart keys=server.listen " in daemon.log()
    assert daemon.query("example.test", address=old_address) == ENFORCE_REPLY + STS_ATTRIBUTES
    assert fetches(world) == 1
    assert daemon.proc is not None and daemon.proc.poll() is None
    daemon.write_config(server={"listen": [old_address]})  # the file says what runs again
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("event=reloaded entries=1", count=2)
    assert daemon.log().count("event=reload-needs-restart") == 1  # nothing left to restart for


def test_sighup_with_a_broken_config_keeps_the_running_one(
    daemon: DaemonProcess, world: StsWorld
) -> None:
    daemon.start()
    assert daemon.query("example.test") == ENFORCE_REPLY
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "\n[cache]\ncold_wait = -1\n")  # duplicate table
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("level=ERROR .*event=reload-failed")
    daemon.config_path.write_text(good.replace('state_dir = "', 'bogus = 1\nstate_dir = "'))
    daemon.send(signal.SIGHUP)
    failed = daemon.wait_for_log("level=ERROR .*event=reload-failed.*", count=2)
    assert "cache.bogus" in failed.group(0)
    assert daemon.query("example.test") == ENFORCE_REPLY  # old settings, cache intact
    daemon.config_path.write_text(good)
    daemon.write_config(server={"sts_attributes": True})
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("event=reloaded")
    assert daemon.query("example.test") == ENFORCE_REPLY + STS_ATTRIBUTES
    assert fetches(world) == 1
    assert daemon.stop() == 0


def test_corrupt_store_is_moved_aside_and_the_daemon_runs(
    daemon: DaemonProcess, world: StsWorld
) -> None:
    daemon.state_dir.mkdir(parents=True)
    garbage = b"this is not an SQLite database\n" * 200
    daemon.store_path.write_bytes(garbage)
    daemon.start()
    assert daemon.proc is not None
    aside = daemon.state_dir / "policies.sqlite.corrupt"
    line = daemon.wait_for_log(r"level=ERROR .*event=store-corrupt .*")
    assert str(aside) in line.group(0)
    assert aside.read_bytes() == garbage
    assert daemon.query("example.test") == ENFORCE_REPLY
    assert daemon.stop() == 0
    assert "example.test" in stored_rows(daemon.store_path)


# --- systemd -------------------------------------------------------------------------------------

ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execvp(sys.argv[2], sys.argv[2:])
"""
"""What systemd does for socket activation: the socket as fd 3, LISTEN_PID = the exec'd pid."""


def test_systemd_socket_activation_answers_on_the_passed_socket(daemon: DaemonProcess) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    daemon.start(
        wrapper=[sys.executable, "-c", ACTIVATE, str(listener.fileno())],
        pass_fds=[listener.fileno()],
    )
    listener.close()  # only the daemon's copy is left
    assert "event=listening source=systemd sockets=1" in daemon.log()
    assert daemon.query("example.test", address=f"127.0.0.1:{port}") == ENFORCE_REPLY
    with pytest.raises(ConnectionRefusedError):
        daemon.query("example.test")  # server.listen is ignored under socket activation
    assert daemon.stop() == 0


def test_sd_notify_ready_reloading_stopping(daemon: DaemonProcess, short_dir: Path) -> None:
    path = short_dir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink:
        sink.bind(str(path))
        sink.settimeout(10)
        daemon.start(env={"NOTIFY_SOCKET": str(path)})
        assert daemon.proc is not None
        ready = sink.recv(4096).decode().split("\n")
        assert "READY=1" in ready
        assert f"MAINPID={daemon.proc.pid}" in ready
        assert daemon.query("example.test") == ENFORCE_REPLY  # READY means answering
        daemon.send(signal.SIGHUP)
        reloading = sink.recv(4096).decode().split("\n")
        assert reloading[0] == "RELOADING=1"
        assert reloading[1].startswith("MONOTONIC_USEC=") and reloading[1][15:].isdigit()
        assert sink.recv(4096).decode() == "READY=1"
        daemon.send(signal.SIGTERM)
        assert sink.recv(4096).decode() == "STOPPING=1"
        assert daemon.stop() == 0


# --- connections (docs/conformance.md: PF-socketmap-sequential, PF-socketmap-framing-error) -------


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str | None
) -> bytes:
    """Send one request (None: already sent) and read its reply."""
    if key is not None:
        writer.write(encode_netstring(f"postfix {key}".encode()))
    decoder = NetstringDecoder(max_length=200_000)
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            raise EOFError(f"connection closed before the reply to {key}")
        replies = decoder.feed(data)
        if replies:
            assert len(replies) == 1
            return replies[0]


async def test_200_concurrent_connections_with_sequential_requests(
    daemon: DaemonProcess, world: StsWorld
) -> None:
    """200 connections ask a cold domain at once (one TXT query, one fetch), then keep asking.

    The policy host answers after 0.5 s (< cold_wait), so odd clients' third request arrives
    while the first fetch is in flight: every first lookup must wait for it (RFC 8461 §5.1).
    """
    site = world.https.site_for("mta-sts.example.test")
    assert site is not None
    site.delay = 0.5
    await asyncio.to_thread(daemon.start)
    keys = [
        ("example.test", ENFORCE_REPLY),
        ("nothing.test", NOTFOUND),
        (".example.test", NOTFOUND),
        ("EXAMPLE.Test.", ENFORCE_REPLY),  # PF-key-forms
        ("[192.0.2.1]", NOTFOUND),  # RFC 8461 §3.4
        ("example.test:587", ENFORCE_REPLY),  # PF-key-forms
    ]

    async def client(i: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        try:
            return [await exchange(reader, writer, key) for key, _ in keys[i % 2 :] + keys]
        finally:
            writer.close()

    results = await asyncio.gather(*(client(i) for i in range(200)))
    for i, got in enumerate(results):
        assert got == [want for _, want in keys[i % 2 :] + keys], f"client {i}"
    assert world.dns.query_count("_mta-sts.example.test") == 1
    assert fetches(world) == 1


async def test_malformed_netstring_closes_only_that_connection(daemon: DaemonProcess) -> None:
    await asyncio.to_thread(daemon.start)
    good_r, good_w = await asyncio.open_connection("127.0.0.1", daemon.port)
    assert await exchange(good_r, good_w, "example.test") == ENFORCE_REPLY
    for garbage in (b"abc:postfix example.test,", b"19:postfix example.test;", b"99999999:"):
        bad_r, bad_w = await asyncio.open_connection("127.0.0.1", daemon.port)
        bad_w.write(garbage)
        assert await asyncio.wait_for(bad_r.read(), 10) == b"", garbage  # closed, no reply
        bad_w.close()
        assert await exchange(good_r, good_w, "example.test") == ENFORCE_REPLY
    good_w.close()
    assert await asyncio.to_thread(daemon.query, "example.test") == ENFORCE_REPLY


def test_repeat_requests_are_answered_by_the_reply_memo(world: StsWorld) -> None:
    """The running daemon wires the memo into its connections: same bytes, same answer,
    counted as memo hits (and cache hits) on the metrics endpoint."""
    import urllib.request

    from mta_sts_policyd.postfix.client import SocketmapClient

    metrics_port = free_port()
    settings = {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}}
    with DaemonProcess.for_servers(world.dns, world.https, settings) as process:
        process.start()
        with SocketmapClient(process.address, timeout=10) as client:
            replies = [client.query("example.test") for _ in range(4)]
        assert replies == [ENFORCE_REPLY] * 4
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("mta_sts_policyd_reply_memo_hits_total", "mta_sts_policyd_cache_hits"))
    }
    # The first answer fetched, the second taught the memo, the last two came from it.
    assert values["mta_sts_policyd_reply_memo_hits_total"] == 2
    assert values["mta_sts_policyd_cache_hits_total"] == 3
    assert fetches(world) == 1
