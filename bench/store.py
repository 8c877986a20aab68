"""A pre-populated policy store for our daemon (the start-up and 100k-memory scenarios)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fixtures import MAX_AGE
from mta_sts_policyd.policy.cache import CacheEntry, PolicyStore
from mta_sts_policyd.sts.model import Mode, Policy


def make_store(path: Path, domains: Sequence[str]) -> Path:
    """Write `domains` as freshly fetched enforce policies (same ones the fixtures serve)."""
    if path.exists():
        return path
    now = time.time()
    store = PolicyStore(path)
    try:
        batch = []
        for i, domain in enumerate(domains):
            mx = (f"mx1.{domain}", f"mx2.{domain}")
            lines = ("version: STSv1", "mode: enforce", *(f"mx: {m}" for m in mx))
            policy = Policy(Mode.ENFORCE, MAX_AGE, mx, (*lines, f"max_age: {MAX_AGE}"))
            batch.append(
                CacheEntry(
                    domain=domain,
                    policy_id="gen1",
                    policy=policy,
                    fetched_at=now,
                    expires_at=now + MAX_AGE,
                    txt_checked_at=now,
                    last_used=now - i,
                )
            )
            if len(batch) == 10_000:
                store.write(batch, [])
                batch = []
        store.write(batch, [])
    finally:
        store.close()
    return path
