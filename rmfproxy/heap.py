"""Give glibc's free heap pages back to the system, periodically.

Every camera's packets are small heap blocks (~1.4 KB) that live up to a GOP (held by the
fan-out for fast start) among blocks freed within a loop turn (client frames, merged
copies). glibc keeps the pages of freed blocks inside its heap and returns only the
heap's top, so the proxy's RSS stays at the high-water mark of every camera's GOPs at
once, and more (measured with ``bench/scale.py --memory-report``: at 40 cameras of
3.8 Mbit/s, 36 MB in use and 63-82 MB free inside the heap). ``malloc_trim(0)``
releases the free pages in the middle of the heap too. It blocks the event loop while
it walks the heap: 0.1-0.6 ms in the proxy's usual heap (packets freed in GOP order),
but 20-35 ms in a heap of 100 MB cut into many small free pieces (measured with a
synthetic one). So the pause between two trims grows with what the last one took, to
keep the loop's time in trims under 0.1 % (a trim of 25 ms: one every 25 s). Not glibc
(musl, or another allocator preloaded): nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
from collections.abc import Awaitable, Callable

TRIM_INTERVAL = 1.0
"""Seconds between two trims, at least."""
MAX_SHARE = 0.001
"""At most this share of the loop's time goes to trims."""


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` as a callable, or None where there is no such function."""
    with contextlib.suppress(OSError, AttributeError):
        trim = ctypes.CDLL(None).malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        return lambda: trim(0)
    return None


async def trim_heap(
    trim: Callable[[], object] | None = None,
    interval: float = TRIM_INTERVAL,
    *,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Trim the heap every ``interval`` seconds or more (:func:`next_delay`) until
    cancelled (returns at once without a ``trim``: the default is glibc's, when there is
    one)."""
    trim = trim or malloc_trim()
    if trim is None:
        return
    delay = interval
    while True:
        await sleep(delay)
        start = clock()
        trim()
        delay = next_delay(interval, clock() - start)


def next_delay(interval: float, took: float) -> float:
    """The pause before the next trim after one that took ``took`` seconds: ``interval``,
    or longer so that trims take at most :data:`MAX_SHARE` of the time."""
    return max(interval, took / MAX_SHARE)
