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


def test_a_slow_trim_spaces_out_the_next_ones() -> None:
    # A trim that blocked the loop for 25 ms is followed by 25 s without one (0.1 % of
    # the loop's time); a fast one keeps the interval.
    assert heap.next_delay(1.0, 0.0006) == 1.0
    assert heap.next_delay(1.0, 0.025) == pytest.approx(25.0)


async def test_the_pause_after_a_trim_follows_what_it_took() -> None:
    pauses: list[float] = []

    async def sleep(delay: float) -> None:
        pauses.append(delay)
        if len(pauses) == 3:
            raise _Enough

    took = iter([0.0, 0.02, 20.02, 20.0201])  # the clock around two trims: 20 ms, 0.1 ms
    with pytest.raises(_Enough):
        await heap.trim_heap(lambda: None, 1.0, clock=lambda: next(took), sleep=sleep)
    assert pauses == pytest.approx([1.0, 20.0, 1.0])
