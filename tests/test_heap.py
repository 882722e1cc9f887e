"""The periodic heap trim (rmfproxy.heap)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from rmfproxy import heap


class _Enough(Exception):
    pass


async def test_trims_once_per_interval() -> None:
    loop = asyncio.get_running_loop()
    calls: list[float] = []

    def trim() -> None:
        calls.append(loop.time())
        if len(calls) == 3:
            raise _Enough

    start = loop.time()
    with pytest.raises(_Enough):
        await heap.trim_heap(trim, interval=0.01)
    assert calls[0] - start >= 0.009  # not at once: the heap is small at the start
    assert all(b - a >= 0.009 for a, b in itertools.pairwise(calls))


async def test_returns_at_once_without_a_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "malloc_trim", lambda: None)
    await asyncio.wait_for(heap.trim_heap(interval=3600), 1)


def test_glibc_trim_runs() -> None:
    trim = heap.malloc_trim()
    assert trim is not None  # this machine's Python runs on glibc
    assert trim() in (0, 1)
