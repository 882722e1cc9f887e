"""Interval arithmetic on coverage: closed-open ``[start, end)`` intervals of Unix time.

No I/O and no clock: every function takes the times it works on. An interval is a
``(start, end)`` pair of floats; one with ``end <= start`` is empty and disappears on
normalization. A *normalized* list is sorted, holds no empty interval, and no two of
its intervals overlap or touch (``[0, 1)`` and ``[1, 2)`` are one interval ``[0, 2)``:
closed-open intervals that touch leave no instant uncovered between them).

The journal keeps one list per camera and source; playback and the coverage report ask
which parts of a window some source covers (:func:`union`), which parts none covers
(:func:`gaps`) and how much of the window a list covers (:func:`coverage_ratio`).
"""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[float, float]
"""``(start, end)``: the instants ``start <= t < end`` (Unix seconds)."""


def normalize(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-empty, non-overlapping, non-touching: overlapping or adjacent ones join."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def union(sources: Iterable[Iterable[Interval]]) -> list[Interval]:
    """The instants covered by at least one of ``sources`` (each a list of intervals)."""
    return normalize(i for source in sources for i in source)


def clip(intervals: Iterable[Interval], start: float, end: float) -> list[Interval]:
    """The normalized parts of ``intervals`` inside the window ``[start, end)``."""
    return normalize((max(s, start), min(e, end)) for s, e in intervals)


def gaps(sources: Iterable[Iterable[Interval]], start: float, end: float) -> list[Interval]:
    """The parts of ``[start, end)`` that no source covers, in order."""
    out: list[Interval] = []
    at = start
    for s, e in clip(union(sources), start, end):
        if s > at:
            out.append((at, s))
        at = e
    if end > at:
        out.append((at, end))
    return out


def covered_seconds(intervals: Iterable[Interval]) -> float:
    """Total length of the instants covered (overlaps counted once)."""
    return sum(e - s for s, e in normalize(intervals))


def coverage_ratio(intervals: Iterable[Interval], start: float, end: float) -> float:
    """Covered fraction of ``[start, end)``, from 0 to 1 (0 for an empty window)."""
    if end <= start:
        return 0.0
    return min(1.0, covered_seconds(clip(intervals, start, end)) / (end - start))
