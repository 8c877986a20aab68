"""The policy store under real faults (issue 11 items 6, 7, 17): a full tmpfs, a read-only
remount, a damaged file, a writer thread that is gone, and the umask.

What must hold: a write failure is an exception in bounded time (sqlitedict's commit used to
wait forever once its thread died on "database or disk is full"), the batch is kept and lands
once space returns, only a damaged file is moved aside, and the files are 0600.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mta_sts_policyd.errors import StateUnusableError, StoreError
from mta_sts_policyd.policy.cache import CacheEntry, PolicyCache, PolicyStore
from mta_sts_policyd.policy.store import writer as writer_module
from mta_sts_policyd.sts.policy import parse_policy
from support.filesystems import SmallFs, small_fs

pytestmark = pytest.mark.fault

POLICY = parse_policy(
    (
        "version: STSv1\nmode: enforce\nmax_age: 86400\n"
        + "".join(f"mx: mx{i}.example.test\n" for i in range(20))
    ).encode()
)
BOUND = 30.0
"""A write that takes longer than this is the hang of issue 11 item 6."""


def entries(count: int, prefix: str = "d") -> list[CacheEntry]:
    return [
        CacheEntry(f"{prefix}{i}.test", "1", POLICY, fetched_at=1e9, expires_at=2e9, last_used=1e9)
        for i in range(count)
    ]


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """Run `call` in a thread; fail (instead of hanging the suite) if it does not return."""
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still waiting after {seconds} s: the store hangs"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[SmallFs]:
    with small_fs(tmp_path / "state", "1m") as mounted:
        yield mounted


def test_a_full_disk_fails_the_write_in_bounded_time_and_the_batch_lands_later(
    fs: SmallFs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cache = PolicyCache(PolicyStore(fs.path / "policies.sqlite"), memory_entries=10_000)
    for entry in entries(5, "old"):
        cache.put(entry)
    assert cache.write_batch(*cache.take_batch())
    fs.fill()
    for entry in entries(300):
        cache.put(entry)
    started = time.monotonic()
    assert within(BOUND, lambda: cache.write_batch(*cache.take_batch())) is False
    assert time.monotonic() - started < BOUND
    failed = [
        r.getMessage() for r in caplog.records if "event=store-write-failed" in r.getMessage()
    ]
    assert failed and "database or disk is full" in failed[0]
    assert cache.unsaved() == 300  # kept for the next flush
    assert cache.get("d7.test") is not None  # answers still come from memory
    assert cache.load_from_store("d7.test") is not None  # and reads see unsaved entries
    fs.free()
    assert within(BOUND, lambda: cache.write_batch(*cache.take_batch())) is True
    assert "event=store-write-recovered" in caplog.text
    assert cache.unsaved() == 0
    assert within(BOUND, cache.close) == 0
    reopened = PolicyStore(fs.path / "policies.sqlite")
    assert len(reopened) == 305
    reopened.close()


def test_closing_on_a_full_disk_reports_the_loss_and_returns(fs: SmallFs) -> None:
    cache = PolicyCache(PolicyStore(fs.path / "policies.sqlite"))
    fs.fill()
    for entry in entries(300):
        cache.put(entry)
    assert within(BOUND, cache.close) == 300  # what it reports as lost


def test_a_writer_thread_that_is_gone_costs_one_batch_not_a_hang(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path / "policies.sqlite", stall_timeout=2.0)
    writer = store._writer._db
    assert writer is not None
    writer.conn.close(force=True)  # what an exception escaping sqlitedict's loop leaves behind
    writer.conn.join(5)
    with pytest.raises(StoreError, match="writer thread has ended"):
        within(BOUND, lambda: store.write(entries(3), []))
    within(BOUND, lambda: store.write(entries(3), []))  # a new connection, a new thread
    assert len(store) == 3
    store.close()


def test_a_reopen_that_blocks_is_given_up_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reopen that never returns (a hung network mount; no local file system can be made to
    hang, so sqlitedict's constructor is made to block here) gives up at the stall bound
    instead of holding the flush and, with it, SIGTERM."""
    store = PolicyStore(tmp_path / "policies.sqlite", stall_timeout=1.0)
    store._writer.discard()  # as after a failed batch: the next one opens a new connection
    hung = threading.Event()

    def blocking_open(*args: Any, **kwargs: Any) -> None:
        hung.wait(30)

    monkeypatch.setattr(writer_module, "SqliteDict", blocking_open)
    started = time.monotonic()
    with pytest.raises(StoreError, match="no answer opening it for 1 s"):
        within(BOUND, lambda: store.write(entries(3), []))
    assert time.monotonic() - started < 5
    hung.set()
    monkeypatch.undo()
    store.write(entries(3), [])  # the mount is back: the next batch opens and lands
    assert len(store) == 3
    store.close()


def test_a_full_disk_at_open_renames_nothing(fs: SmallFs) -> None:
    path = fs.path / "policies.sqlite"
    store = PolicyStore(path)
    store.write(entries(20), [])
    store.close()
    content = path.read_bytes()
    fs.fill()
    with pytest.raises(StateUnusableError) as info:
        within(BOUND, lambda: PolicyStore(path))
    message = str(info.value)
    assert message.startswith(f"{path}: cannot open the policy store: file system full")
    assert "\n" not in message
    assert not any("corrupt" in p.name for p in fs.path.iterdir())
    assert path.read_bytes() == content


def test_a_read_only_state_at_open_renames_nothing(fs: SmallFs) -> None:
    path = fs.path / "policies.sqlite"
    store = PolicyStore(path)
    store.write(entries(2), [])
    store.close()
    fs.read_only()
    try:
        with pytest.raises(StateUnusableError, match="read-only file system"):
            PolicyStore(path)
        assert not any("corrupt" in p.name for p in fs.path.iterdir())
    finally:
        fs.read_only(False)
    reopened = PolicyStore(path)
    assert len(reopened) == 2
    reopened.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: b"this is not an SQLite database\n" * 200,
        lambda raw: raw[:100] + b"\xff" * 4000 + raw[4100:],  # pages overwritten: malformed
    ],
    ids=["not-a-database", "malformed"],
)
def test_only_a_damaged_file_is_moved_aside(
    tmp_path: Path, damage: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policies.sqlite"
    store = PolicyStore(path)
    store.write(entries(50), [])
    store.close()
    bad = damage(path.read_bytes())
    path.write_bytes(bad)
    with caplog.at_level(logging.ERROR):
        fresh = PolicyStore(path)
    assert len(fresh) == 0
    fresh.close()
    assert (tmp_path / "policies.sqlite.corrupt").read_bytes() == bad
    assert "event=store-corrupt" in caplog.text


def test_store_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = PolicyStore(tmp_path / "policies.sqlite")
        store.write(entries(2), [])
        assert len(store) == 2  # the read connection: -shm exists now
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in tmp_path.iterdir()
            if p.name.startswith("policies.sqlite")
        }
        store.close()
    finally:
        os.umask(old)
    assert set(modes) >= {"policies.sqlite", "policies.sqlite-wal", "policies.sqlite-shm"}
    assert set(modes.values()) == {0o600}, modes


def test_eviction_on_a_full_disk_is_logged_and_tried_again_later(
    fs: SmallFs, caplog: pytest.LogCaptureFixture
) -> None:
    """The hourly eviction task used to die on the first StoreError and never run again."""
    cache = PolicyCache(PolicyStore(fs.path / "policies.sqlite"), max_entries=10)
    cache.store.write(entries(200), [])  # type: ignore[union-attr]
    fs.fill()
    assert within(BOUND, cache.evict_store_overflow) == 0
    assert "event=store-evict-failed" in caplog.text
    fs.free()
    assert within(BOUND, cache.evict_store_overflow) == 190
    cache.close()
