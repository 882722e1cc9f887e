"""Give glibc's free heap pages back to the system, periodically.

Every camera's packets are small heap blocks (~1.4 KB) that live up to a GOP (held by the
fan-out for fast start) among blocks freed within a loop turn (client frames, merged
copies). glibc keeps the pages of freed blocks inside its heap and returns only the
heap's top, so the proxy's RSS stays at the high-water mark of every camera's GOPs at
once, and more (measured with ``bench/scale.py --memory-report``: at 40 cameras of
3.8 Mbit/s, 36 MB in use and 63-82 MB free inside the heap). ``malloc_trim(0)``
releases the free pages in the middle of the heap too; it takes well under a
millisecond, so once a second costs nothing that shows. Not glibc (musl, or another
allocator preloaded): nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from collections.abc import Callable

TRIM_INTERVAL = 1.0
"""Seconds between two trims."""


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` as a callable, or None where there is no such function."""
    with contextlib.suppress(OSError, AttributeError):
        trim = ctypes.CDLL(None).malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        return lambda: trim(0)
    return None


async def trim_heap(
    trim: Callable[[], object] | None = None, interval: float = TRIM_INTERVAL
) -> None:
    """Trim the heap every ``interval`` seconds until cancelled (returns at once without a
    ``trim``: the default is glibc's, when there is one)."""
    trim = trim or malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(interval)
        trim()
