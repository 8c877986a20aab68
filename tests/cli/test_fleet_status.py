"""`fleet status` against a real redis-server: what it shows (human and --json, a stable
schema: docs/fleet.md), and its exit codes (cli/exit_codes.py): 0 when Redis answered, 75
naming the URL and the reason when it cannot, 1 when fleet mode is off, 78 on a bad config."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from mta_sts_policyd.cli.main import main
from mta_sts_policyd.fleet.keys import FleetKeys
from mta_sts_policyd.fleet.nodes import NodeRecord
from mta_sts_policyd.fleet.status import recent_days
from support.ports import free_port
from support.redis_server import RedisServer

KEYS = FleetKeys("fl")


def config(tmp_path: Path, redis: str, **extra: str) -> str:
    lines = ["[fleet]", f'redis = "{redis}"', 'key_prefix = "fl"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    lines += ["[cache]", f'state_dir = "{tmp_path / "state"}"']
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def seed(redis_server: RedisServer) -> None:
    import redis

    now = time.time()
    yesterday = recent_days(now)[1]
    r = redis.Redis.from_url(redis_server.url)
    r.hset(KEYS.nodes, mapping={
        "mx1": NodeRecord("mx1", "1.2", now - 900, now - 3, queued_writes=2, refresh_due=3,
                          snapshots={yesterday: now - 600}).to_json(),
        "mx4": NodeRecord("mx4", "1.2", now - 900, now - 3, conflict_at=now - 20).to_json(),
        "mx2": NodeRecord("mx2", "1.2", now - 900, now - 400, breaker="open").to_json(),
        "mx3": NodeRecord("mx3", "1.2", now - 900, now - 400, state="stopped").to_json(),
        "bad": b"{not json",
    })  # fmt: skip
    r.zadd(KEYS.refresh_due, {"a.test": now - 10, "b.test": now - 5, "c.test": now + 3600})
    r.mset({KEYS.policy(f"d{n}.test"): b"{}" for n in range(2500)})
    r.set(KEYS.fetch_lock("d1.test"), b"mx1")  # not a policy
    r.set("other:v1:policy:x.test", b"{}")  # another fleet's prefix
    r.hset(KEYS.snapshot(yesterday), mapping={"mx1": b"{}", "mx2": b"{}"})
    r.hset(KEYS.report_state(yesterday), mapping={
        "a.test d1": json.dumps({"state": "sent", "token": 3}),
        "b.test d2": json.dumps({"state": "retry", "token": 4}),
        "c.test d3": b"garbage", "d.test d4": json.dumps({"state": "<script>"}),
    })  # fmt: skip
    r.close()


def test_status_json_schema(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_server: RedisServer
) -> None:
    seed(redis_server)
    code, out, _ = run(capsys, "fleet", "status", "-c", config(tmp_path, redis_server.url),
                       "--json")  # fmt: skip
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    assert data["ok"] is True and data["schema_version"] == 1 and data["exit_code"] == 0
    assert data["redis"] == redis_server.url and data["key_prefix"] == "fl"
    assert set(data) == {"ok", "exit_code", "schema_version", "redis", "key_prefix", "now",
                         "nodes", "refresh_queue", "shared_policies", "reports"}  # fmt: skip
    nodes = {n["name"]: n for n in data["nodes"]}
    assert {k: n["condition"] for k, n in nodes.items()} == {
        "bad": "unreadable", "mx1": "up", "mx2": "gone", "mx3": "stopped", "mx4": "up",
    }  # fmt: skip
    mx1 = nodes["mx1"]
    assert set(mx1) == {
        "name", "condition", "version", "started", "last_seen", "seconds_since_seen",
        "heartbeat_interval", "gone_after",
        "breaker", "queued_writes", "refresh_due_seen", "redis_errors", "snapshots",
        "name_conflict",
    }  # fmt: skip
    assert (mx1["breaker"], mx1["queued_writes"], mx1["refresh_due_seen"]) == ("closed", 2, 3)
    assert nodes["mx2"]["breaker"] == "open" and set(nodes["bad"]) == {"name", "condition"}
    assert [n for n, v in nodes.items() if v.get("name_conflict")] == ["mx4"]
    assert data["refresh_queue"] == {"depth": 3, "due_now": 2}
    assert data["shared_policies"] == {"count": 2500, "complete": True}
    days = data["reports"]
    assert [d["day"] for d in days] == recent_days(data["now"])
    assert days[1] == {"day": days[1]["day"], "snapshot_nodes": ["mx1", "mx2"], "reports": 4,
                       "sent": 1, "states": {"retry": 1, "sent": 1, "unreadable": 2}}  # fmt: skip


def test_status_for_people(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_server: RedisServer
) -> None:
    seed(redis_server)
    code, out, err = run(capsys, "fleet", "status", "-c", config(tmp_path, redis_server.url))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"redis: {redis_server.url} (key prefix fl)"
    assert lines[1].split() == ["NODE", "CONDITION", "LAST", "SEEN", "BREAKER", "QUEUED",
                                "WRITES", "VERSION", "LAST", "SNAPSHOT"]  # fmt: skip
    mx1 = next(line for line in lines if line.startswith("mx1 "))
    assert mx1.split()[:2] == ["mx1", "up"] and mx1.split()[3:6] == ["ago", "closed", "2"]
    assert "nodes: 5 (1 gone, 1 stopped, 1 unreadable, 2 up)" in lines
    assert [line for line in lines if line.startswith("name conflict:")] == [
        "name conflict: mx4 is more than one running daemon (give each its own [fleet]"
        " node_name; their TLS-RPT counts are not uploaded until then)"
    ]
    assert "refresh queue: 3 domains, 2 due now" in lines
    assert "shared policies: 2500" in lines
    assert any("counts from mx1, mx2; 1 of 4 reports sent (retry 1, sent 1, unreadable 2)" in line
               for line in lines)  # fmt: skip


def test_unreachable_redis_exits_75_naming_url_and_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    code, out, err = run(capsys, "fleet", "status", "-c", config(tmp_path, url))
    assert code == 75 and out == ""
    assert err.startswith(
        "fleet status: cannot read the fleet from Redis at redis://***@127.0.0.1:"
    )
    assert "ConnectionError: Error 111 connecting to 127.0.0.1:" in err  # ECONNREFUSED
    assert "s3cret" not in err
    assert time.monotonic() - started < 5
    code, out, _ = run(capsys, "fleet", "status", "-c", config(tmp_path, url), "--json")
    data = json.loads(out)
    assert code == 75 and data["ok"] is False and data["exit_code"] == 75
    assert "127.0.0.1" in data["error"] and "s3cret" not in data["error"]


def test_a_frozen_redis_costs_the_timeouts_then_exits_75(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.freeze()
    try:
        started = time.monotonic()
        code, _, err = run(capsys, "fleet", "status", "-c", config(tmp_path, redis_server.url))
    finally:
        redis_server.thaw()
    assert code == 75 and "Timeout" in err
    assert time.monotonic() - started < 5


def test_fleet_mode_off_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[cache]\nstate_dir = "{tmp_path}"\n')
    code, _, err = run(capsys, "fleet", "status", "-c", str(path))
    assert code == 1 and "fleet mode is off" in err


def test_unreadable_password_file_is_a_config_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = config(tmp_path, "redis://127.0.0.1:1/0", password_file=str(tmp_path / "none"))
    for command in (["fleet", "status"], ["check-config"]):
        code, _, err = run(capsys, *command, "-c", path)
        assert code == 78 and "fleet.password_file: cannot read" in err


def test_an_empty_password_file_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_server: RedisServer
) -> None:
    """Before, check-config passed and `fleet status` failed with redis-py's riddle
    (`AuthenticationError: HELLO must be called ...`)."""
    empty = tmp_path / "redis.password"
    empty.write_text("\n")
    empty.chmod(0o600)
    path = config(tmp_path, redis_server.url, password_file=str(empty))
    for command in (["check-config"], ["fleet", "status"]):
        code, out, err = run(capsys, *command, "-c", path)
        assert code == 78, (out, err)
        assert f"fleet.password_file: {empty} is empty" in err and "HELLO" not in err


def test_a_missing_or_wrong_password_is_named_as_such(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_server: RedisServer
) -> None:
    import redis

    r = redis.Redis.from_url(redis_server.url)
    r.config_set("requirepass", "right")
    r.close()
    code, _, err = run(capsys, "fleet", "status", "-c", config(tmp_path, redis_server.url))
    assert code == 75 and "(Redis wants a password: set fleet.password_file)" in err
    wrong = tmp_path / "redis.password"
    wrong.write_text("wrong\n")
    wrong.chmod(0o600)
    path = config(tmp_path, redis_server.url, password_file=str(wrong))
    code, _, err = run(capsys, "fleet", "status", "-c", path)
    assert code == 75 and "(Redis refused the password of fleet.password_file or the URL)" in err
    assert "wrong" not in err.replace("password_file", "")


def test_a_password_file_others_can_read_is_warned_about(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    secret = tmp_path / "redis.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    path = config(tmp_path, "redis://127.0.0.1:6379/0", password_file=str(secret))
    code, _, err = run(capsys, "check-config", "-c", path)
    assert code == 0
    assert f"fleet.password_file: {secret} is open to its group or others (mode 0644)" in err
    secret.chmod(0o600)
    code, _, err = run(capsys, "check-config", "-c", path)
    assert code == 0 and "fleet.password_file" not in err


@pytest.mark.parametrize("name", ["x y\nz", "mx 1", "-mx1", "mx1\u2028", ""])
def test_check_config_refuses_a_node_name_that_is_not_one_word(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    path = tmp_path / "config.toml"
    quoted = json.dumps(name)  # a TOML basic string: the escapes as TOML reads them
    path.write_text(f'[fleet]\nredis = "redis://127.0.0.1:1/0"\nnode_name = {quoted}\n')
    code, _, err = run(capsys, "check-config", "-c", str(path))
    if not name:  # empty: the host name stands in
        assert "fleet.node_name" not in err
        return
    assert code == 78 and "fleet.node_name: expected a name of letters, digits" in err, err


def test_names_from_redis_are_printed_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_server: RedisServer
) -> None:
    """A name in Redis holding a line break cannot split the table or fake a row."""
    import redis

    now = time.time()
    r = redis.Redis.from_url(redis_server.url)
    forged = "mx9\nmx8   up         1s ago"
    r.hset(KEYS.nodes, mapping={
        "mx1": NodeRecord("mx1", "1.2", now - 900, now - 3).to_json(), forged: b"{}",
    })  # fmt: skip
    r.hset(KEYS.snapshot(recent_days(now)[0]), mapping={"a\nb": b"{}", "mx1": b"{}"})
    r.close()
    code, out, _ = run(capsys, "fleet", "status", "-c", config(tmp_path, redis_server.url))
    assert code == 0
    lines = out.splitlines()
    assert not any(line.startswith("mx8") for line in lines)
    row = next(line for line in lines if line.startswith("mx9"))
    name, condition = row.split()[:2]
    assert name.startswith("mx9\\nmx8\\x20\\x20") and condition == "unreadable"
    assert any("counts from a\\nb, mx1;" in line for line in lines)


def test_check_config_shows_the_fleet_section(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = config(tmp_path, "redis://127.0.0.1:6379/0", node_name="mx7")
    code, out, _ = run(capsys, "check-config", "-c", path)
    assert code == 0
    section = out[out.index("[fleet]") :]
    assert 'redis = "redis://127.0.0.1:6379/0"' in section and 'node_name = "mx7"' in section
    assert "heartbeat_interval = 15.0" in section and "breaker_failures = 3" in section
    code, out, _ = run(capsys, "check-config", "-c", path, "--json")
    assert json.loads(out)["fleet"]["key_prefix"] == "fl"


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ('redis = "localhost:6379"', "fleet.redis: expected a redis://, rediss:// or unix:///"),
        ("command_timeout = 0", "fleet.command_timeout: expected a number of seconds"),
        ("heartbeat_interval = 0", "fleet.heartbeat_interval: expected a number of seconds"),
        ('sentinels = ["127.0.0.1:26379"]', "fleet.service: required with fleet.sentinels"),
        ('ca_file = "/nonexistent/ca.pem"', "fleet.ca_file: no such file"),
    ],
)
def test_check_config_refuses_bad_fleet_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str, named: str
) -> None:
    path = tmp_path / "config.toml"
    base = (
        'redis = "redis://127.0.0.1:1/0"\n' if not line.startswith(("redis", "sentinels")) else ""
    )
    path.write_text(f"[fleet]\n{base}{line}\n")
    code, _, err = run(capsys, "check-config", "-c", str(path))
    assert code == 78 and named in err, err


@pytest.mark.parametrize(
    ("version", "too_old"),
    [("4.3.4", True), ("5.0.0", True), ("5.0.1", False), ("8.1.0", False), ("10.0", False),
     ("5.0.1rc1", False), ("", True), ("dev", True)],
)  # fmt: skip
def test_redis_py_version_floor(version: str, too_old: bool) -> None:
    from mta_sts_policyd.service.fleet_parts import redis_version_too_old

    assert redis_version_too_old(version) is too_old


def test_check_config_refuses_an_old_redis_py(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian 12's python3-redis (4.3.4) fails the fleet's outage tests: named, not run."""
    import redis

    monkeypatch.setattr(redis, "__version__", "4.3.4")
    code, _, err = run(capsys, "check-config", "-c", config(tmp_path, "redis://127.0.0.1:1/0"))
    assert code == 78 and "redis-py 5.0.1 or newer, found 4.3.4" in err
