"""How this Python process uses memory: malloc arenas, freed pages, the cyclic collector.

Why a module of its own: these are process-wide settings with measured reasons (bench/README.md,
"Where the time and memory go"), not part of serving; app.py calls them at fixed points.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc

M_ARENA_MAX = -8  # mallopt(3) parameter number in glibc


def freeze_startup_heap() -> None:
    """Keep what start-up built (modules, the hot set) out of every later cyclic collection.

    Measured in the cold benchmark: full collections walking that heap took 20-30 ms, and every
    answer in flight waited that long (the p99 of cold lookups). Frozen objects are still freed
    by reference counting; only cycles among them would stay, and start-up leaves none to speak
    of.
    """
    gc.collect()
    gc.freeze()


def release_free_memory() -> None:
    """After bulk work (thousands of store rows in one flush), hand freed heap pages back to
    the OS: glibc keeps them otherwise, and RSS stays at the peak. glibc only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread (store, sqlitedict, to_thread workers) its own malloc arena, and
    memory freed there stays in RSS; two arenas are plenty for this daemon. glibc only."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas)
