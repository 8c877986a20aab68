"""The shared policy cache wired into the real daemon (`serve` with `[fleet] redis`): two daemon
processes share one fetch, `cache show` names the tier, `cache purge` reaches the other one; with
fleet mode off the daemon never loads redis-py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import StsWorld
from support.daemon_process import DaemonProcess, subprocess_env, wait_until
from support.ports import free_port
from support.redis_server import RedisServer

ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
ENFORCE_REPLY = b"OK secure match=mail.example.test servername=hostname"


def cache_command(process: DaemonProcess, *args: str) -> str:
    result = process.cli("cache", *args, "-c", str(process.config_path))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_two_daemons_share_one_fetch_and_one_purge(
    sts_world: StsWorld, redis_server: RedisServer
) -> None:
    sts_world.publish("example.test", ENFORCE)

    def fleet(name: str) -> dict[str, dict[str, object]]:
        return {"fleet": {"redis": redis_server.url, "node_name": name, "key_prefix": "w"}}

    with (
        DaemonProcess.for_servers(sts_world.dns, sts_world.https, fleet("a")) as a,
        DaemonProcess.for_servers(sts_world.dns, sts_world.https, fleet("b")) as b,
    ):
        a.start()
        b.start()
        b.wait_for_log("event=fleet-subscribed")
        assert a.query("example.test") == ENFORCE_REPLY
        assert b.query("example.test") == ENFORCE_REPLY
        assert sts_world.https.request_count("mta-sts.example.test") == 1
        shown = cache_command(b, "show", "example.test", "--json")
        assert '"tier": "memory"' in shown and '"origin": "redis"' in shown
        cache_command(a, "purge", "example.test")

        def purged_on_b() -> bool:
            shown = b.cli("cache", "show", "example.test", "-c", str(b.config_path))
            return "not in the cache" in shown.stderr

        assert wait_until(purged_on_b, timeout=5)
        assert a.stop() == 0 and b.stop() == 0


def test_fleet_off_never_imports_redis(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from mta_sts_policyd.config.settings import Config, with_overrides
        from mta_sts_policyd.service.daemon import Daemon

        async def main():
            config = with_overrides(Config(), listen=[{listen!r}], state_dir={str(tmp_path)!r})
            daemon = Daemon(config)
            await daemon.start()
            await daemon.stop()
            print("fleet" if daemon.fleet is not None else "single", "redis" in sys.modules)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["single", "False"]
