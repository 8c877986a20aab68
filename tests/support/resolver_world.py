"""A PolicyResolver on the loopback STS world with an injected clock, and the policies it serves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from conftest import StsWorld
from mta_sts_policyd.config.settings import CacheConfig, ServerConfig
from mta_sts_policyd.policy.cache import PolicyCache, PolicyStore
from mta_sts_policyd.policy.resolver import LookupSettings, PolicyResolver

ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.test\nmax_age: 86400\n"
TESTING = ENFORCE.replace("enforce", "testing")
NONE = "version: STSv1\nmode: none\nmax_age: 86400\n"
ENFORCE_REPLY = b"OK secure match=mail.example.test servername=hostname"
NOTFOUND = b"NOTFOUND "
T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def lookup_settings(**overrides: object) -> LookupSettings:
    """The resolver settings of a default configuration (whose defaults are the only ones),
    changed by `overrides`."""
    cache, server = CacheConfig(), ServerConfig()
    values: dict[str, object] = {
        field.name: getattr(cache, field.name)
        for field in dataclasses.fields(LookupSettings)
        if hasattr(cache, field.name)
    }
    values["exact_wildcards"] = server.exact_wildcards
    values.update(overrides)
    return LookupSettings(**values)  # type: ignore[arg-type]


def make_resolver(
    world: StsWorld, clock: FakeClock, store: Path | None = None, **settings: object
) -> PolicyResolver:
    options: dict[str, object] = {"cold_wait": 5.0, "exact_wildcards": False}
    options.update(settings)
    memory = int(options.pop("memory_entries", 20_000))  # type: ignore[call-overload]
    cache = PolicyCache(PolicyStore(store) if store else None, memory_entries=memory)
    return PolicyResolver(
        world.discovery(),
        cache,
        lookup_settings(**options),
        clock=clock,  # type: ignore[arg-type]
    )
