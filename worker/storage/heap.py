"""Giving freed heap memory back to the system after a large load or compaction.

Decoding and merging a long history allocates many times the size of what is kept (every
deleted character is decoded, merged and dropped again). glibc keeps the freed memory in the
thread's arena, so a worker that cold-loaded one long session stayed at twice the memory it had
while the session was typed live (issue 21: 148 MB against 70 MB). ``malloc_trim`` returns it;
elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["TRIM_AFTER_BYTES", "release_free_memory"]

# Below this much input the retained memory is small, and not worth a walk over the arenas
# (which briefly holds their locks, so other threads' allocations wait for it).
TRIM_AFTER_BYTES = 1024 * 1024


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_TRIM = _malloc_trim()


def release_free_memory(processed_bytes: int) -> None:
    """After work on ``processed_bytes`` of stored objects (in a worker thread)."""
    if _TRIM is not None and processed_bytes >= TRIM_AFTER_BYTES:
        _TRIM(0)
