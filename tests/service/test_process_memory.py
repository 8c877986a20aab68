"""Process-wide memory settings (process_memory.py)."""

from __future__ import annotations

import gc

from mta_sts_policyd.service.process_memory import freeze_startup_heap


def test_startup_heap_is_kept_out_of_later_collections() -> None:
    """Full collections walking the start-up heap stalled every answer in flight (cold p99)."""
    before = gc.get_freeze_count()
    freeze_startup_heap()
    try:
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
