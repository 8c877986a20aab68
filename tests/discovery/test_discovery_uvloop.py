"""The daemon runs on uvloop when installed: policy fetches must classify failures the same way
there (its TLS transport is not asyncio's). RFC 8461 §3.3 on the uvloop event loop."""

from __future__ import annotations

import pytest

from conftest import StsWorld
from mta_sts_policyd.errors import PolicyFetchError, ResultType

uvloop = pytest.importorskip("uvloop")

POLICY = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
CASES = {
    "ok": ({}, None),
    "wrong": ({"cert": "wrong-name"}, ResultType.STS_WEBPKI_INVALID),
    "expired": ({"cert": "expired"}, ResultType.STS_WEBPKI_INVALID),
    "selfsigned": ({"cert": "self-signed"}, ResultType.STS_WEBPKI_INVALID),
    "slow": ({"delay": 2.0}, ResultType.STS_POLICY_FETCH_ERROR),
    "redirect": (
        {"status": 301, "location": "https://elsewhere.test/"},
        ResultType.STS_POLICY_FETCH_ERROR,
    ),
}


def test_fetch_outcomes_on_uvloop(sts_world: StsWorld) -> None:
    for name, (site, _) in CASES.items():
        sts_world.publish(f"{name}.test", POLICY, **site)

    async def run() -> dict[str, ResultType | None]:
        outcomes: dict[str, ResultType | None] = {}
        async with sts_world.discovery(fetch_timeout=1.5) as discovery:
            for name in CASES:
                try:
                    await discovery.fetch_policy(f"{name}.test")
                    outcomes[name] = None
                except PolicyFetchError as exc:
                    outcomes[name] = exc.result_type
        return outcomes

    assert uvloop.run(run()) == {name: expected for name, (_, expected) in CASES.items()}
