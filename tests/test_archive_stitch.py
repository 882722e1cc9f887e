"""The stitching core: plans from journal intervals, stitched frames from synthetic recorders.

Frames are numbered on one camera's grid (frame ``n`` captured at ``n / 25``); each
synthetic recorder has some of them, in runs, with keyframes on its own GOP. The
properties: every instant of the window that some recorder can deliver decodably
(from a keyframe of the same contiguous run) appears exactly once, in order; every
part of the output from one source starts on a keyframe and skips none of that
source's frames; D, E, T and the seam count say what happened.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from rmfproxy.archive.coverage import Interval
from rmfproxy.archive.stitch import (
    ArchiveFrame,
    PlannedSpan,
    Stitched,
    fetch_ranges,
    plan,
    stitch,
)

FPS = 25


def t(n: float) -> float:
    return n / FPS


def recorder(
    name: str,
    numbers: Iterable[int],
    *,
    gop: int = 10,
    phase: int = 0,
    offset: float = 0.0,
    d_flags: Iterable[int] = (),
) -> list[ArchiveFrame]:
    """Frames ``numbers`` of one recorder: keyframes where ``n % gop == phase``, D where it
    follows a hole (as a replay flags it) or where ``d_flags`` says."""
    out: list[ArchiveFrame] = []
    prev: int | None = None
    d_set = set(d_flags)
    for n in sorted(numbers):
        out.append(
            ArchiveFrame(
                t(n) + offset,
                n % gop == phase,
                (f"{name}:{n}".encode(),),
                discontinuity=(prev is not None and n != prev + 1) or n in d_set,
            )
        )
        prev = n
    return out


def numbers(result: Stitched) -> list[int]:
    """The frame numbers of the stitched output (from the payloads)."""
    return [int(f.frame.nals[0].split(b":")[1]) for f in result.frames]


def sources(result: Stitched) -> list[str]:
    return [f.source for f in result.frames]


# plan ----------------------------------------------------------------------------


def test_plan_takes_the_primary_where_it_has_footage_and_the_next_for_its_gaps() -> None:
    journal = {"r1": [(0.0, 10.0), (13.0, 30.0)], "r2": [(0.0, 20.0), (25.0, 30.0)]}
    assert plan(0.0, 30.0, journal) == [
        PlannedSpan("r1", 0.0, 10.0),
        PlannedSpan("r2", 10.0, 13.0),
        PlannedSpan("r1", 13.0, 30.0),
    ]


def test_plan_keeps_a_span_no_source_covers_as_a_gap() -> None:
    journal = {"r1": [(5.0, 10.0), (14.0, 20.0)], "r2": [(6.0, 11.0), (13.0, 18.0)]}
    assert plan(0.0, 25.0, journal) == [
        PlannedSpan(None, 0.0, 5.0),
        PlannedSpan("r1", 5.0, 10.0),
        PlannedSpan("r2", 10.0, 11.0),
        PlannedSpan(None, 11.0, 13.0),
        PlannedSpan("r2", 13.0, 14.0),
        PlannedSpan("r1", 14.0, 20.0),
        PlannedSpan(None, 20.0, 25.0),
    ]
    assert plan(0.0, 5.0, {"r1": [], "r2": []}) == [PlannedSpan(None, 0.0, 5.0)]
    assert plan(5.0, 5.0, journal) == []


def test_fetch_ranges_widen_each_sources_spans_by_the_margin_inside_the_window() -> None:
    spans = plan(0.0, 30.0, {"r1": [(0.0, 10.0), (13.0, 30.0)], "r2": [(0.0, 30.0)]})
    assert fetch_ranges(spans, 0.0, 30.0, 2.0) == {
        "r1": [(-2.0, 30.0)],  # (-2, 12) and (11, 30) overlap: joined
        "r2": [(8.0, 15.0)],
    }
    spans = plan(0.0, 30.0, {"r1": [(0.0, 10.0), (20.0, 30.0)], "r2": [(0.0, 30.0)]})
    assert fetch_ranges(spans, 0.0, 30.0, 1.0) == {
        "r1": [(-1.0, 11.0), (19.0, 30.0)],
        "r2": [(9.0, 21.0)],
    }


intervals_st = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda p: (float(p[0]), float(p[1]))),
    max_size=5,
)


@given(st.lists(intervals_st, min_size=1, max_size=3), st.integers(0, 30), st.integers(1, 20))
def test_plan_partitions_the_window_by_priority(
    per: list[list[Interval]], start: int, length: int
) -> None:
    journal = {f"r{i}": ivs for i, ivs in enumerate(per)}
    s, e = float(start), float(start + length)
    spans = plan(s, e, journal)
    assert spans[0].start == s and spans[-1].end == e
    for a, b in itertools.pairwise(spans):
        assert a.end == b.start and a.source != b.source
    names = list(journal)
    for span in spans:
        mid = (span.start + span.end) / 2
        covering = [n for n in names if any(x <= mid < y for x, y in journal[n])]
        assert span.source == (covering[0] if covering else None)


# stitch: explicit cases ---------------------------------------------------------------


def test_one_recorder_with_everything_is_copied_from_the_keyframe_before_the_start() -> None:
    r1 = recorder("r1", range(0, 100))
    out = stitch(t(25), t(75), {"r1": r1, "r2": recorder("r2", range(0, 100))})
    assert numbers(out) == list(range(20, 75))  # keyframe 20 at or before 25; 75 is the end
    assert set(sources(out)) == {"r1"}
    assert out.seams == 0 and out.gaps == [] and out.taken_back == 0
    assert out.frames[-1].terminal and not any(f.terminal for f in out.frames[:-1])
    assert not any(f.discontinuity or f.end for f in out.frames)


def test_primary_gap_is_taken_over_at_the_standbys_keyframe_and_failed_back_at_the_primarys() -> (
    None
):
    # r1 stopped recording after frame 47 and resumed at 83 (no keyframe until 90);
    # r2 (GOP 10, phase 5) has everything.
    r1 = recorder("r1", [*range(0, 48), *range(83, 150)])
    r2 = recorder("r2", range(0, 150), phase=5)
    out = stitch(t(0), t(150), {"r1": r1, "r2": r2})
    assert numbers(out) == list(range(0, 150))
    src = sources(out)
    # the takeover is at r2's keyframe 45 (at or before 48): r1's 45..47 were taken back
    assert src[:45] == ["r1"] * 45 and src[45:90] == ["r2"] * 45 and src[90:] == ["r1"] * 60
    assert out.taken_back == 3
    assert out.seams == 2
    seams = [f for f in out.frames if f.seam]
    assert [numbers(Stitched(seams, 0, []))] == [[45, 90]]
    assert all(f.frame.keyframe and f.discontinuity for f in seams)
    assert out.gaps == []
    assert out.per_source == {"r1": 105, "r2": 45}


def test_a_span_no_recorder_has_is_a_gap_with_e_before_and_d_after() -> None:
    r1 = recorder("r1", [*range(0, 40), *range(70, 100)])
    r2 = recorder("r2", [*range(0, 30), *range(60, 100)], phase=5)
    out = stitch(t(0), t(100), {"r1": r1, "r2": r2})
    # r1 to 39, nobody has 40..59, r2's first keyframe after the hole is 65 (its 60..64
    # cannot be decoded), r1's keyframe 70 brings it back
    assert numbers(out) == [*range(0, 40), *range(65, 100)]
    assert sources(out) == ["r1"] * 40 + ["r2"] * 5 + ["r1"] * 30
    before, after = out.frames[39], out.frames[40]
    assert before.end and not before.discontinuity
    assert after.discontinuity and after.frame.keyframe and not after.seam
    assert out.seams == 1  # r2 -> r1 at 70; the gap is not a seam
    assert out.gaps == [(t(40), t(65))]
    assert [f.end for f in out.frames].count(True) == 1


def test_nothing_recorded_is_one_gap_and_no_frame() -> None:
    out = stitch(t(0), t(50), {"r1": [], "r2": recorder("r2", range(60, 90))})
    assert out.frames == [] and out.gaps == [(t(0), t(50))] and out.seams == 0


def test_leading_and_trailing_gaps_are_reported() -> None:
    out = stitch(t(0), t(100), {"r1": recorder("r1", range(20, 60))})
    assert numbers(out) == list(range(20, 60))
    assert out.gaps == [(t(0), t(20)), (t(60), t(100))]
    assert not out.frames[0].discontinuity  # nothing before it to be discontinuous with


def test_recorder_clock_jitter_neither_repeats_nor_reverses_a_picture() -> None:
    # r2 stamps the same pictures 7 ms later than r1 (its own clock)
    r1 = recorder("r1", [*range(0, 50), *range(90, 120)])
    r2 = recorder("r2", range(0, 120), phase=3, offset=0.007)
    out = stitch(t(0), t(120), {"r1": r1, "r2": r2})
    assert numbers(out) == list(range(0, 120))
    times = [f.capture_time for f in out.frames]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert out.seams == 2


def test_repeated_or_backward_capture_times_in_one_recorder_are_dropped() -> None:
    frames = recorder("r1", range(0, 30))
    bad = [*frames[:10], frames[5], frames[9], *frames[10:]]
    out = stitch(t(0), t(30), {"r1": bad})
    assert numbers(out) == list(range(0, 30)) and out.dropped == 2


def test_a_flagged_discontinuity_without_a_time_jump_cuts_the_run() -> None:
    # r1 says frame 33 follows a discontinuity (its recording restarted): 33..39 cannot
    # be decoded from r1's keyframe 30, so r2 (keyframe 32) takes over
    r1 = recorder("r1", range(0, 60), d_flags=[33])
    r2 = recorder("r2", range(0, 60), gop=4)
    out = stitch(t(0), t(60), {"r1": r1, "r2": r2})
    assert numbers(out) == list(range(0, 60))
    assert sources(out) == ["r1"] * 32 + ["r2"] * 8 + ["r1"] * 20
    assert out.seams == 2


def test_a_primary_that_keeps_dropping_out_does_not_loop() -> None:
    # r1 has only its keyframes (one-frame runs): every failback is undone at once
    r1 = recorder("r1", range(0, 200, 10), gop=10)
    r2 = recorder("r2", range(0, 200), gop=7)
    out = stitch(t(0), t(200), {"r1": r1, "r2": r2})
    assert numbers(out) == list(range(0, 200))


# stitch: properties ---------------------------------------------------------------------


@st.composite
def recorders(draw: st.DrawFn) -> tuple[int, int, dict[str, list[ArchiveFrame]]]:
    total = draw(st.integers(10, 160))
    per: dict[str, list[ArchiveFrame]] = {}
    for i in range(draw(st.integers(1, 3))):
        gop = draw(st.integers(1, 12))
        phase = draw(st.integers(0, gop - 1))
        present = draw(st.lists(st.booleans(), min_size=total, max_size=total))
        # long holes are more like a recorder being down than single lost frames
        holes = draw(st.lists(st.tuples(st.integers(0, total), st.integers(1, 40)), max_size=3))
        for a, n in holes:
            present[a : a + n] = [False] * len(present[a : a + n])
        if draw(st.booleans()):
            present = [True] * total if not holes else present
        d_flags = draw(st.lists(st.integers(0, total - 1), max_size=2))
        name = f"r{i}"
        per[name] = recorder(
            name, [n for n in range(total) if present[n]], gop=gop, phase=phase, d_flags=d_flags
        )
    start = draw(st.integers(0, total - 1))
    end = draw(st.integers(start + 1, total + 5))
    return start, end, per


def decodable(per: dict[str, list[ArchiveFrame]], start: int, end: int) -> set[int]:
    """Frame numbers in [start, end) that some recorder has after a keyframe of its run."""
    out: set[int] = set()
    for frames in per.values():
        ok = False
        prev: ArchiveFrame | None = None
        for f in frames:
            if prev is None or f.discontinuity:
                ok = False
            ok = ok or f.keyframe
            if ok:
                n = round(f.capture_time * FPS)
                if start <= n < end:
                    out.add(n)
            prev = f
    return out


@settings(max_examples=400, deadline=None)
@given(recorders())
def test_every_decodable_instant_of_the_window_once_in_order_seams_on_keyframes(
    case: tuple[int, int, dict[str, list[ArchiveFrame]]],
) -> None:
    start, end, per = case
    out = stitch(t(start), t(end), per)
    got = numbers(out)
    # strictly rising: no capture time twice, none backwards
    assert all(b > a for a, b in itertools.pairwise(got))
    assert {n for n in got if n >= start} == decodable(per, start, end)
    assert all(n < end for n in got)
    if not out.frames:
        assert out.gaps == [(t(start), t(end))]
        return
    # before the window: only the pre-roll from the first keyframe, within one GOP of
    # some recorder (at most 12 frames here)
    assert got[0] >= start - 12
    # each piece from one source starts on a keyframe and skips none of its frames
    index = {
        name: {round(f.capture_time * FPS): i for i, f in enumerate(frames)}
        for name, frames in per.items()
    }
    seams = 0
    for k, f in enumerate(out.frames):
        prev = out.frames[k - 1] if k else None
        new_piece = prev is None or prev.source != f.source or f.discontinuity
        if new_piece:
            assert f.frame.keyframe, (k, got[k], f.source)
        else:
            assert prev is not None
            assert index[f.source][got[k]] == index[prev.source][got[k - 1]] + 1
        if prev is not None and prev.source != f.source and not prev.end:
            seams += 1
            assert f.seam and f.discontinuity
        after = out.frames[k + 1] if k + 1 < len(got) else None
        assert f.end == (after is not None and after.discontinuity and not after.seam)
    assert out.seams == seams
    assert [f.terminal for f in out.frames] == [False] * (len(got) - 1) + [True]
    # a gap is reported exactly where E/D are, plus the window's edges
    inner = [g for g in out.gaps if g[0] != t(start) and g[1] != t(end)]
    ends = [(f.capture_time, out.frames[k + 1]) for k, f in enumerate(out.frames) if f.end]
    assert len(inner) == len(ends)
    for (a, b), (last, after) in zip(inner, ends, strict=True):
        assert last < a <= b == after.capture_time
