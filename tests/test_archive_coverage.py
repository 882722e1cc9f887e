"""Interval arithmetic of the coverage journal: explicit numbers, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rmfproxy.archive.coverage import (
    Interval,
    clip,
    coverage_ratio,
    covered_seconds,
    gaps,
    normalize,
    union,
)


def test_normalize_sorts_drops_empty_and_joins_overlapping_and_touching() -> None:
    assert normalize([(5.0, 6.0), (0.0, 1.0), (3.0, 3.0), (4.0, 2.0)]) == [(0.0, 1.0), (5.0, 6.0)]
    assert normalize([(0.0, 2.0), (1.0, 3.0)]) == [(0.0, 3.0)]
    assert normalize([(0.0, 1.0), (1.0, 2.0)]) == [(0.0, 2.0)]  # closed-open: no hole at 1
    assert normalize([(0.0, 10.0), (2.0, 3.0)]) == [(0.0, 10.0)]  # contained
    assert normalize([(0.0, 1.0), (1.5, 2.0)]) == [(0.0, 1.0), (1.5, 2.0)]
    assert normalize([]) == []


def test_union_of_two_recorders_with_non_overlapping_holes_has_no_hole() -> None:
    r1 = [(0.0, 10.0), (12.0, 30.0)]  # r1 down 10..12
    r2 = [(0.0, 20.0), (23.0, 30.0)]  # r2 down 20..23
    assert union([r1, r2]) == [(0.0, 30.0)]
    assert gaps([r1, r2], 0.0, 30.0) == []
    assert gaps([r1], 0.0, 30.0) == [(10.0, 12.0)]


def test_gaps_where_both_were_down_and_at_the_window_edges() -> None:
    r1 = [(5.0, 10.0), (14.0, 20.0)]
    r2 = [(6.0, 11.0), (13.0, 18.0)]
    assert gaps([r1, r2], 0.0, 25.0) == [(0.0, 5.0), (11.0, 13.0), (20.0, 25.0)]
    assert gaps([r1, r2], 7.0, 12.0) == [(11.0, 12.0)]
    assert gaps([], 0.0, 4.0) == [(0.0, 4.0)]
    assert gaps([r1], 3.0, 3.0) == []  # empty window


def test_clip_cuts_to_the_window() -> None:
    ivs = [(0.0, 10.0), (12.0, 15.0), (20.0, 30.0)]
    assert clip(ivs, 5.0, 25.0) == [(5.0, 10.0), (12.0, 15.0), (20.0, 25.0)]
    assert clip(ivs, 10.0, 12.0) == []  # [0,10) ends where the window starts
    assert clip(ivs, 40.0, 50.0) == []


def test_coverage_ratio_and_covered_seconds() -> None:
    ivs = [(0.0, 10.0), (5.0, 15.0), (20.0, 25.0)]
    assert covered_seconds(ivs) == 20.0  # the overlap counts once
    assert coverage_ratio(ivs, 0.0, 40.0) == 0.5
    assert coverage_ratio(ivs, 0.0, 15.0) == 1.0
    assert coverage_ratio(ivs, 15.0, 20.0) == 0.0
    assert coverage_ratio(ivs, 5.0, 5.0) == 0.0
    assert coverage_ratio([(1.7e9, 1.7e9 + 1800)], 1.7e9, 1.7e9 + 3600) == pytest.approx(0.5)


# Properties on small integer-valued times: exact float arithmetic, so equalities hold.
_times = st.integers(min_value=0, max_value=100).map(float)
_interval = st.tuples(_times, _times)
_source = st.lists(_interval, max_size=8)
_sources = st.lists(_source, max_size=4)


def _contains(ivs: list[Interval], s: float, e: float) -> bool:
    return any(a <= s and e <= b for a, b in ivs)


def _no_overlap_or_touch(ivs: list[Interval]) -> bool:
    return all(a < b for a, b in ivs) and all(
        ivs[i][1] < ivs[i + 1][0] for i in range(len(ivs) - 1)
    )


@given(_sources)
def test_union_covers_each_input_and_is_normalized(sources: list[list[Interval]]) -> None:
    merged = union(sources)
    assert _no_overlap_or_touch(merged)
    for source in sources:
        for s, e in source:
            if e > s:
                assert _contains(merged, s, e)
    assert covered_seconds(merged) <= sum(e - s for src in sources for s, e in src if e > s)


@given(_sources, _times, _times)
def test_gaps_and_union_partition_the_window(
    sources: list[list[Interval]], a: float, b: float
) -> None:
    start, end = min(a, b), max(a, b)
    holes = gaps(sources, start, end)
    covered = clip(union(sources), start, end)
    assert _no_overlap_or_touch(holes)
    # gaps and coverage never overlap, and together they are the whole window
    for s, e in holes:
        assert all(e <= cs or ce <= s for cs, ce in covered)
    assert normalize([*holes, *covered]) == ([(start, end)] if end > start else [])
    assert covered_seconds(holes) + covered_seconds(covered) == end - start
    ratio = coverage_ratio(union(sources), start, end)
    assert 0.0 <= ratio <= 1.0


@given(_source)
def test_normalize_is_idempotent(ivs: list[Interval]) -> None:
    once = normalize(ivs)
    assert normalize(once) == once
    assert _no_overlap_or_touch(once)
