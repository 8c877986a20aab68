"""The real daemon under storage faults (issue 11 items 6-9, 17): `mta-sts-policyd serve` as a
process, its state directory on a small tmpfs that the test fills or remounts read-only, a
second `serve` on the same directory, kill -9, SIGTERM with a TLS-RPT store that cannot be
written, and the umask of an operator running it by hand. docs/faults.md lists these tests.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from conftest import StsWorld
from support.daemon_process import COMMAND, DaemonProcess, subprocess_env, wait_until
from support.filesystems import SmallFs, as_nobody, small_fs

pytestmark = pytest.mark.fault

ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
ENFORCE_REPLY = b"OK secure match=mail.example.test servername=hostname"
EXIT_STATE_UNUSABLE, EXIT_STATE_LOCKED = 73, 69
SIGTERM_DEADLINE = 20.0
"""Well inside systemd's TimeoutStopSec=30s of the shipped unit."""


@pytest.fixture
def world(sts_world: StsWorld) -> StsWorld:
    sts_world.publish("example.test", ENFORCE)
    return sts_world


@pytest.fixture
def daemon(world: StsWorld) -> Iterator[DaemonProcess]:
    with DaemonProcess.for_servers(world.dns, world.https) as process:
        yield process


@pytest.fixture
def fs(daemon: DaemonProcess) -> Iterator[SmallFs]:
    """The daemon's state directory is a 2 MB tmpfs."""
    with small_fs(daemon.state_dir, "2m") as mounted:
        yield mounted


def stored(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT key FROM policies")}
    finally:
        conn.close()


def publish_many(world: StsWorld, count: int, prefix: str) -> list[str]:
    names = [f"{prefix}{i}.test" for i in range(count)]
    for name in names:
        world.publish(name, ENFORCE)
    return names


def state_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def serve_once(daemon: DaemonProcess, prefix: Sequence[str] = ()) -> tuple[int, str]:
    """`serve` as a process that must fail at start: (exit code, its stderr)."""
    done = subprocess.run(
        [*prefix, *COMMAND, "serve", "-c", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
        check=False,
    )
    return done.returncode, done.stderr


def assert_one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "level=ERROR" in line]
    assert len(errors) == 1, stderr
    assert "event=start-failed" in errors[0]
    return errors[0]


# --- item 6: a full disk while running ------------------------------------------------------


def test_a_full_disk_during_flushes_never_hangs_and_recovers(
    daemon: DaemonProcess, world: StsWorld, fs: SmallFs
) -> None:
    daemon.write_config(cache={"flush_interval": 0.2})
    daemon.start()
    assert daemon.query("example.test") == ENFORCE_REPLY
    assert wait_until(lambda: "example.test" in stored(daemon.store_path))
    fs.fill()
    first = publish_many(world, 30, "full")
    assert all(daemon.query(name) == ENFORCE_REPLY for name in first)
    failed = daemon.wait_for_log(r"level=ERROR .*event=store-write-failed .*", timeout=20)
    assert "database or disk is full" in failed.group(0)
    assert all(daemon.query(name) == ENFORCE_REPLY for name in first)  # from memory
    fs.free()
    daemon.wait_for_log("event=store-write-recovered", timeout=40)
    assert set(first) <= stored(daemon.store_path)
    failures = daemon.log().count("event=store-write-failed")
    fs.fill()
    # Enough new policies that they cannot all go into blocks the store already holds (SQLite
    # reuses its WAL file's space, which a full disk does not take away), and a failure after
    # this fill, not one of the first, before the stop.
    late = publish_many(world, 60, "late")
    assert all(daemon.query(name) == ENFORCE_REPLY for name in late)
    daemon.wait_for_log(r"event=store-write-failed", timeout=20, count=failures + 1)
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=SIGTERM_DEADLINE) == 0
    assert time.monotonic() - started < SIGTERM_DEADLINE
    assert "event=stopped entries_flushed=no lost=" in daemon.log()
    assert "logger=sqlitedict" not in daemon.log()  # one event line per failure, no traces
    fs.free()
    assert set(first) <= stored(daemon.store_path)


# --- item 7: an unusable state directory at start ------------------------------------------


def test_a_full_disk_at_start_is_one_line_and_renames_nothing(
    daemon: DaemonProcess, fs: SmallFs
) -> None:
    daemon.start()
    assert daemon.query("example.test") == ENFORCE_REPLY
    assert daemon.stop() == 0
    before = state_files(daemon.state_dir)
    fs.fill()
    code, stderr = serve_once(daemon)
    assert code == EXIT_STATE_UNUSABLE
    line = assert_one_line_error(stderr)
    assert f"{daemon.store_path}: cannot open the policy store: file system full" in line
    fs.free()
    after = state_files(daemon.state_dir)
    assert not [name for name in after if "corrupt" in name]
    assert after["policies.sqlite"] == before["policies.sqlite"]
    daemon.start()
    assert "event=cache-loaded entries=1 " in daemon.log()


def test_a_read_only_state_directory_is_one_line_and_renames_nothing(
    daemon: DaemonProcess, fs: SmallFs
) -> None:
    daemon.start()
    assert daemon.query("example.test") == ENFORCE_REPLY
    assert daemon.stop() == 0
    before = state_files(daemon.state_dir)
    fs.read_only()
    try:
        code, stderr = serve_once(daemon)
    finally:
        fs.read_only(False)
    assert code == EXIT_STATE_UNUSABLE
    line = assert_one_line_error(stderr)
    assert str(daemon.state_dir) in line and "read-only file system" in line
    assert state_files(daemon.state_dir) == before


def test_a_state_directory_the_daemon_user_cannot_write(daemon: DaemonProcess) -> None:
    prefix = as_nobody(subprocess_env())
    daemon.state_dir.mkdir(mode=0o755)
    os.chmod(daemon.workdir, 0o755)  # nobody reads the config, not the state directory
    code, stderr = serve_once(daemon, prefix)
    assert code == EXIT_STATE_UNUSABLE
    line = assert_one_line_error(stderr)
    assert str(daemon.state_dir) in line and "not writable by uid 65534" in line
    assert list(daemon.state_dir.iterdir()) == []


# --- item 9: one daemon per state directory ---------------------------------------------------


def test_a_second_serve_on_the_same_state_directory_is_refused(daemon: DaemonProcess) -> None:
    daemon.start()
    assert daemon.query("example.test") == ENFORCE_REPLY
    assert daemon.proc is not None
    first_pid = daemon.proc.pid
    other = DaemonProcess(
        daemon.settings["discovery"]["nameservers"][0],
        daemon.settings["discovery"]["ca_file"],
        daemon.settings["discovery"]["https_port"],
        {"cache": {"state_dir": str(daemon.state_dir)}},
    )
    with other:
        code, stderr = serve_once(other)
        assert code == EXIT_STATE_LOCKED
        line = assert_one_line_error(stderr)
        assert f"{daemon.state_dir}: in use by another mta-sts-policyd serve (pid {first_pid})" in (
            line
        )
        # The first one keeps its control socket and its store.
        listed = daemon.cli("cache", "list", "--state-dir", str(daemon.state_dir), "--json")
        assert listed.returncode == 0 and '"example.test"' in listed.stdout
        daemon.proc.kill()  # kill -9: the kernel drops the lock with the process
        daemon.proc.wait(5)
        other.start()
        assert other.query("example.test") == ENFORCE_REPLY
        assert other.stop() == 0


def test_a_start_that_fails_half_way_leaves_no_control_socket(daemon: DaemonProcess) -> None:
    """The TLS-RPT socket is in use: `serve` stops with 78, and the parts it had started are
    stopped again (the control socket file removed, the lock freed), so the next start and
    `cache list` see no stale channel."""
    import socket

    taken = daemon.state_dir.parent / "tlsrpt-taken.sock"
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    holder.bind(str(taken))
    try:
        daemon.write_config(tlsrpt={
            "enabled": True, "organization_name": "Example", "contact_info": "t@example.test",
            "envelope_sender": "noreply@example.test", "allow_unsigned": True,
            "socket": str(taken),
        })  # fmt: skip
        code, stderr = serve_once(daemon)
        assert code == 75 and "in use by another process" in stderr
        assert not (daemon.state_dir / "control.sock").exists()
        assert sorted(p.name for p in daemon.state_dir.iterdir() if p.is_socket()) == []
    finally:
        holder.close()


# --- item 8: a TLS-RPT store that cannot be written at shutdown ---------------------------------


def test_a_tlsrpt_store_error_at_shutdown_still_flushes_the_policy_cache(
    daemon: DaemonProcess, world: StsWorld
) -> None:
    world.publish("broken.test", ENFORCE, status=500)
    daemon.write_config(
        cache={"flush_interval": 3600.0},  # only the shutdown flush stores policies
        tlsrpt={
            "enabled": True,
            "socket": "",
            "organization_name": "Example Sender",
            "contact_info": "tlsrpt@sender.test",
            "envelope_sender": "tlsrpt@sender.test",
            "allow_unsigned": True,
        },
    )
    daemon.start()
    assert daemon.query("example.test") == ENFORCE_REPLY
    assert daemon.query("broken.test") == b"NOTFOUND "  # a failure event for the TLS-RPT store
    blocker = sqlite3.connect(daemon.state_dir / "tlsrpt.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file: every commit fails
    try:
        started = time.monotonic()
        code = daemon.stop(signal.SIGTERM, timeout=SIGTERM_DEADLINE)
        elapsed = time.monotonic() - started
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    log = daemon.log()
    assert code == 0, log
    assert elapsed < SIGTERM_DEADLINE
    assert "event=tlsrpt-store-close-failed aggregates_lost=1" in log
    assert "database is locked" in log and "cannot rollback" not in log
    assert "event=stopped entries_flushed=yes" in log
    assert {"example.test", "broken.test"} <= stored(daemon.store_path)


# --- item 17: modes whatever the umask --------------------------------------------------------


def test_state_directory_0700_and_files_0600_under_umask_022(daemon: DaemonProcess) -> None:
    daemon.start(wrapper=["sh", "-c", 'umask 022 && exec "$@"', "sh"])
    assert daemon.query("example.test") == ENFORCE_REPLY
    daemon.wait_for_log("event=ready")
    assert wait_until(lambda: "example.test" in stored(daemon.store_path))
    assert stat.S_IMODE(daemon.state_dir.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in daemon.state_dir.iterdir()}
    assert {"policies.sqlite", "policies.sqlite-wal", "policies.sqlite-shm", "serve.lock"} <= set(
        modes
    )
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}
    assert daemon.stop() == 0
