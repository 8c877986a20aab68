"""Settings defaults are written once: in the configuration, not again in the resolver."""

from __future__ import annotations

import dataclasses

from mta_sts_policyd.config.settings import CacheConfig, ServerConfig
from mta_sts_policyd.policy.types import LookupSettings


def test_what_an_operator_can_set_has_its_default_only_in_the_config() -> None:
    configurable = {f.name for f in dataclasses.fields(CacheConfig)} | {
        f.name for f in dataclasses.fields(ServerConfig)
    }
    decided = {"sts_attributes"}  # the config says auto/on/off; start-up decides the bool
    shared = [f for f in dataclasses.fields(LookupSettings) if f.name in configurable - decided]
    assert {f.name for f in shared} >= {"txt_recheck", "cold_wait", "exact_wildcards"}
    with_default = [
        f.name
        for f in shared
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == []
