"""Stitched playback read part by part (:func:`rmfproxy.archive.playback.stitched_frames`)
gives the sequence the whole window stitched at once gives: same frames from the same
sources, same seams, same E/D/T flags, for synthetic recorders with holes, D flags and
their own GOPs (tests/test_archive_stitch.py draws them), as long as a GOP is shorter
than the hold; and a resumed stitch never repeats or reaches back behind what was sent.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Mapping, Sequence

from hypothesis import given, settings

from rmfproxy.archive.playback import stitched_frames
from rmfproxy.archive.stitch import ArchiveFrame, Resume, StitchedFrame, stitch
from tests.test_archive_stitch import numbers, recorder, recorders, t

PART = t(50)
HOLD = t(20)  # longer than any GOP the strategy draws (12 frames)


def replay(frames: Sequence[ArchiveFrame], a: float, b: float) -> list[ArchiveFrame]:
    """What a recorder's replay of ``[a, b)`` returns: from its latest keyframe at or
    before ``a`` (else its first frame after) to the last frame before ``b``."""
    times = [f.capture_time for f in frames]
    keys = [i for i, f in enumerate(frames) if f.keyframe and f.capture_time <= a + 1e-9]
    first = keys[-1] if keys else bisect.bisect_left(times, a)
    return [f for f in frames[first:] if f.capture_time < b]


def in_parts(
    per: Mapping[str, Sequence[ArchiveFrame]], start: float, end: float
) -> tuple[list[StitchedFrame], list[tuple[float, float]]]:
    asked: list[tuple[float, float]] = []

    async def fetch(a: float, b: float) -> dict[str, list[ArchiveFrame]]:
        asked.append((a, b))
        await asyncio.sleep(0)
        return {name: replay(frames, a, b) for name, frames in per.items()}

    async def run() -> list[StitchedFrame]:
        return [f async for f in stitched_frames(start, end, fetch, part=PART, hold=HOLD)]

    return asyncio.run(run()), asked


def flags(frames: Sequence[StitchedFrame]) -> list[tuple[str, bool, bool, bool, bool]]:
    return [(f.source, f.seam, f.discontinuity, f.end, f.terminal) for f in frames]


@settings(max_examples=300, deadline=None)
@given(recorders())
def test_part_by_part_is_the_whole_window_at_once(
    case: tuple[int, int, dict[str, list[ArchiveFrame]]],
) -> None:
    start, end, per = case
    whole = stitch(t(start), t(end), per)
    parts, asked = in_parts(per, t(start), t(end))
    assert [f.capture_time for f in parts] == [f.capture_time for f in whole.frames]
    assert flags(parts) == flags(whole.frames)
    # it was read in parts (each overlapping the one before by the hold), not at once
    assert len(asked) == max(1, 1 + int((t(end) - t(start) - HOLD - 1e-9) // (PART - HOLD)))


def test_long_window_is_read_in_parts_with_seams_and_a_gap() -> None:
    # 40 s: r1 down 300-420 (r2 covers), both down 600-650 (a gap), r2 own GOP and phase
    r1 = recorder("r1", [n for n in range(1000) if not 300 <= n < 420 and not 600 <= n < 650])
    r2 = recorder("r2", [n for n in range(1000) if not 600 <= n < 650], gop=12, phase=5)
    whole = stitch(t(0), t(1000), {"r1": r1, "r2": r2})
    parts, asked = in_parts({"r1": r1, "r2": r2}, t(0), t(1000))
    assert numbers(whole) == [n for n in range(1000) if not 600 <= n < 650]
    assert [f.capture_time for f in parts] == [f.capture_time for f in whole.frames]
    assert flags(parts) == flags(whole.frames)
    assert whole.seams == 2 and len(asked) > 20
    ends = [round(f.capture_time * 25) for f in parts if f.end]
    assert ends == [599]


def test_a_resumed_stitch_never_takes_back_what_was_sent() -> None:
    # r1 sent up to frame 104 and stops at 105; r2's keyframe before that is 100: taking
    # over there would repeat 100-104, so r2 goes on from its next keyframe (110), a gap.
    r1 = recorder("r1", range(0, 105))
    r2 = recorder("r2", range(0, 200))
    got = stitch(t(0), t(200), {"r1": r1, "r2": r2}, resume=Resume("r1", t(104)))
    assert numbers(got)[0] == 110 and got.frames[0].discontinuity and not got.frames[0].seam
    assert got.gaps[0] == (t(105), t(110))
    # resumed inside r1's run: it simply goes on
    got = stitch(t(0), t(200), {"r1": r1, "r2": r2}, resume=Resume("r1", t(50)))
    assert numbers(got)[:3] == [51, 52, 53] and not got.frames[0].discontinuity
    # the source it resumed from returned nothing: the next keyframe after, D
    got = stitch(t(0), t(200), {"r2": r2}, resume=Resume("r1", t(50)))
    assert numbers(got)[0] == 60 and got.frames[0].discontinuity
    assert all(b > a for a, b in itertools.pairwise(numbers(got)))
