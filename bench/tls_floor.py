"""The CPU floor of a cold lookup in Python: a bare TLS GET per domain, nothing else.

Run by the cold scenario inside the benchmark's namespace, against the same HTTPS fixture and
with the same event loop as our daemon: `python tls_floor.py CA_FILE PORT CONCURRENCY NAME...`.
Each name is fetched once (`GET /.well-known/mta-sts.txt` from `mta-sts.NAME` on 127.0.0.1)
with a shared verifying SSLContext, `CONCURRENCY` at a time, and no DNS, no HTTP library, no
parsing. Prints JSON: the process's own CPU per fetch. A daemon that must also ask DNS, parse
the reply and the policy and keep state cannot go below this.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys


async def fetch(ctx: ssl.SSLContext, port: int, host: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    writer.write(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    body = await reader.read()
    writer.close()
    return len(body)


async def main(ca_file: str, port: int, concurrency: int, names: list[str]) -> dict[str, float]:
    ctx = ssl.create_default_context(cafile=ca_file)
    pending = iter(names)

    async def worker() -> None:
        for name in pending:
            if not await fetch(ctx, port, f"mta-sts.{name}"):
                raise RuntimeError(f"empty reply for {name}")

    await fetch(ctx, port, f"mta-sts.{names[0]}")  # warm-up: imports, first context use
    before = os.times()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {"fetches": len(names), "cpu_us_per_fetch": round(cpu / len(names) * 1e6, 1)}


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    ca, port, conns, *domains = sys.argv[1:]
    print(json.dumps(runner(main(ca, int(port), int(conns), domains))))
