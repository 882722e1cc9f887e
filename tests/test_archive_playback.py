"""Stitched playback read part by part (:func:`rmfproxy.archive.playback.stitched_frames`)
gives the sequence the whole window stitched at once gives: same frames from the same
sources, same seams, same E/D/T flags, for synthetic recorders with holes, D flags and
their own GOPs (tests/test_archive_stitch.py draws them), as long as a GOP is shorter
than the hold; and a resumed stitch never repeats or reaches back behind what was sent.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings

from rmfproxy.archive.coverage import Interval
from rmfproxy.archive.playback import (
    PlaybackStats,
    StitchedSource,
    playback_sdp,
    stitched_frames,
)
from rmfproxy.archive.stitch import ArchiveFrame, Resume, StitchedFrame, stitch
from rmfproxy.rtp import h264
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.onvif import ReplayExtension, parse_replay_extension
from rmfproxy.rtp.seqnum import ts_diff
from rmfproxy.rtsp.message import Headers
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.replay import ReplayBusy, ReplayRangeError, ReplayRequest, format_clock
from rmfproxy.sim.marker import find_marker
from tests.test_archive_export import GOP, FakeJournal, FakeRecorder
from tests.test_archive_export import SOURCES as EXPORT_SOURCES
from tests.test_archive_export import t as et
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


# StitchedSource: the RTP a playback session sends -------------------------------------


class History(FakeJournal):
    def history_start(self, camera: str) -> float:
        return et(0)


def session(
    recorders: dict[str, FakeRecorder], journal: dict[str, list[Interval]], **kw: Any
) -> tuple[StitchedSource, PlaybackStats]:
    stats = PlaybackStats()
    live = SessionDescription.parse(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
        "m=audio 0 RTP/AVP 0\r\na=control:trackID=1\r\n"
    )
    made = playback_sdp(live, (et(0), et(1000)))
    assert made is not None
    sdp, pt, codec = made
    assert pt == 96 and codec == "h264" and len(sdp.media) == 1
    src = StitchedSource(
        "cam",
        sdp,
        pt,
        codec,
        journal=History(journal),
        sources=[s for s in EXPORT_SOURCES if s.name in recorders],
        history_start=lambda: et(0),
        stats=stats,
        client=lambda s: recorders[s.name],
        wall=lambda: et(1000),
        part=4.0,
        hold=1.0,
        **kw,
    )
    return src, stats


async def play(src: StitchedSource, **headers: str) -> list[tuple[bytes, ReplayExtension]]:
    """PLAY (with the given headers: no Range resumes) and read until the range ends."""
    src.seek(ReplayRequest.from_headers(Headers({"CSeq": "3", **headers})))
    out: list[tuple[bytes, ReplayExtension]] = []
    while (frame := await src.next_frame()) is not None:
        for pkt in frame.packets:
            ext = parse_replay_extension(pkt)
            assert ext is not None, "a packet without the 0xABAC extension"
            out.append((pkt, ext))
    return out


def by_frame(pkts: list[tuple[bytes, ReplayExtension]]) -> list[dict[str, Any]]:
    """Per frame: counter, capture time, RTP timestamp, flags (E/T on the last packet,
    D on the first), NAL types."""
    out: list[dict[str, Any]] = []
    depay = h264.depacketizer()
    cur: list[tuple[bytes, ReplayExtension]] = []
    for pkt, ext in pkts:
        cur.append((pkt, ext))
        h = rtp.parse_header(pkt)
        if not h.marker:
            continue
        nals = []
        for p, _ in cur:
            hh = rtp.parse_header(p)
            nals += depay.push(p[hh.payload_offset : hh.payload_end])
        mark = find_marker(b"".join(nals))
        assert mark is not None
        first, last = cur[0][1], cur[-1][1]
        out.append(
            {
                "n": mark[0],
                "t": first.unix_time,
                "ts": h.timestamp,
                "C": first.clean,
                "D": first.discontinuity,
                "E": last.end,
                "T": last.terminal,
                "types": [n[0] & 0x1F for n in nals],
            }
        )
        cur = []
    assert not cur, "packets after the last marker"
    return out


def check_rtp(pkts: list[tuple[bytes, ReplayExtension]]) -> None:
    seqs = [rtp.sequence(p) for p, _ in pkts]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert len({rtp.parse_header(p).ssrc for p, _ in pkts}) == 1
    assert {e.cseq for _, e in pkts} == {3}


async def test_a_gap_both_recorders_have_is_e_then_d_and_the_end_is_t() -> None:
    # r1 lacks 100-149, r2 lacks 120-139: r2 fills 100-119, then a real gap (120-139;
    # the next keyframe of either is 140), then r2 until r1's keyframe at 150.
    r1 = FakeRecorder("r1", [n for n in range(300) if not 100 <= n < 150])
    r2 = FakeRecorder("r2", [n for n in range(300) if not 120 <= n < 140])
    journal = {"r1": [(et(0), et(100)), (et(150), et(300))], "r2": [(et(0), et(120))]}
    src, stats = session({"r1": r1, "r2": r2}, journal)
    pkts = await play(src, Range=f"clock={format_clock(et(10))}-{format_clock(et(290))}")
    check_rtp(pkts)
    frames = by_frame(pkts)
    assert [f["n"] for f in frames] == [n for n in range(10, 290) if not 120 <= n < 140]
    assert [f["n"] for f in frames if f["E"]] == [119]
    assert [f["n"] for f in frames if f["D"]] == [100, 140, 150]  # seam, gap, seam
    assert [f["T"] for f in frames] == [False] * (len(frames) - 1) + [True]
    assert all(f["C"] == (f["n"] % GOP == 0) for f in frames)
    assert all(abs(f["t"] - et(f["n"])) < 1e-4 for f in frames)  # true capture times
    steps = [ts_diff(b["ts"], a["ts"]) for a, b in itertools.pairwise(frames)]
    assert all(s == 3600 for i, s in enumerate(steps) if frames[i]["n"] != 119)
    assert steps[[f["n"] for f in frames].index(119)] == 21 * 3600  # the gap, kept
    assert stats.seams == {"cam": 2} and stats.gaps == {"cam": 1}
    assert src.ssrc(0) == rtp.parse_header(pkts[0][0]).ssrc


async def test_a_seek_is_d_on_a_keyframe_and_timestamps_never_go_back() -> None:
    r1 = FakeRecorder("r1", range(300))
    src, _ = session({"r1": r1}, {"r1": [(et(0), et(300))]})
    first = by_frame(
        await play(src, Range=f"clock={format_clock(et(200))}-{format_clock(et(220))}")
    )
    back = by_frame(await play(src, Range=f"npt={(et(53) - et(0)):.3f}-{(et(75) - et(0)):.3f}"))
    assert [f["n"] for f in first] == list(range(200, 220))
    assert [f["n"] for f in back] == list(range(50, 75))  # from the keyframe before 53
    assert back[0]["D"] and back[0]["C"] and not any(f["D"] for f in back[1:])
    assert ts_diff(back[0]["ts"], first[-1]["ts"]) > 0


async def test_intra_only_sends_keyframes() -> None:
    r1 = FakeRecorder("r1", range(100))
    src, _ = session({"r1": r1}, {"r1": [(et(0), et(100))]})
    got = by_frame(
        await play(src, Range=f"clock={format_clock(et(0))}-{format_clock(et(95))}", Frames="intra")
    )
    assert [f["n"] for f in got] == list(range(0, 95, GOP))


async def test_the_piece_of_a_standby_without_inband_parameter_sets_gets_them() -> None:
    r1 = FakeRecorder("r1", range(0, 50))
    r2 = FakeRecorder("r2", range(0, 100))
    r2.recorded = [
        dataclasses.replace(f, nals=tuple(n for n in f.nals if n[0] & 0x1F not in (7, 8)))
        for f in r2.recorded
    ]
    src, _ = session({"r1": r1, "r2": r2}, {"r1": [(et(0), et(50))], "r2": [(et(0), et(100))]})
    got = by_frame(await play(src, Range=f"clock={format_clock(et(0))}-{format_clock(et(99))}"))
    seam = next(f for f in got if f["D"])
    assert seam["n"] == 50 and seam["types"][:2] == [7, 8]  # SPS, PPS from r2's SDP
    assert [f["n"] for f in got] == list(range(99))


async def test_playbacks_beyond_the_limit_are_refused_until_one_ends() -> None:
    r1 = FakeRecorder("r1", range(100))
    stats = PlaybackStats()
    a, _ = session({"r1": r1}, {"r1": [(et(0), et(100))]}, max_sessions=1)
    b, _ = session({"r1": r1}, {"r1": [(et(0), et(100))]}, max_sessions=1)
    a._stats = b._stats = stats  # one proxy's playbacks
    rng = f"clock={format_clock(et(0))}-{format_clock(et(50))}"
    await play(a, Range=rng)
    with pytest.raises(ReplayBusy):
        b.seek(ReplayRequest.from_headers(Headers({"CSeq": "1", "Range": rng})))
    assert stats.sessions == 1 and stats.refused == 1
    a.close()
    assert len(await play(b, Range=rng)) > 0 and stats.sessions == 1
    b.close()
    assert stats.sessions == 0


async def test_a_range_before_the_history_is_457() -> None:
    src, _ = session({"r1": FakeRecorder("r1", range(10))}, {"r1": []})
    with pytest.raises(ReplayRangeError):
        src.seek(
            ReplayRequest.from_headers(
                Headers(
                    {"CSeq": "1", "Range": f"clock={format_clock(et(-50))}-{format_clock(et(-1))}"}
                )
            )
        )


class SlowRecorder(FakeRecorder):
    async def frames(self, start: float, end: float) -> AsyncIterator[ArchiveFrame]:
        await asyncio.sleep(0.05)  # a recorder that takes its time to answer
        async for f in super().frames(start, end):
            yield f


async def test_a_pause_while_the_recorders_are_read_loses_nothing() -> None:
    src, _ = session({"r1": SlowRecorder("r1", range(300))}, {"r1": [(et(0), et(300))]})
    rng = f"clock={format_clock(et(0))}-{format_clock(et(250))}"
    src.seek(ReplayRequest.from_headers(Headers({"CSeq": "3", "Range": rng})))
    got: list[tuple[bytes, ReplayExtension]] = []
    for _ in range(3):  # PAUSE (the sender cancelled) in the middle of each read
        reader = asyncio.ensure_future(src.next_frame())
        await asyncio.sleep(0.01)
        assert not reader.done()
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        got += await play(src)  # PLAY without a Range: resume
        if got and got[-1][1].terminal:
            break
    frames = by_frame(got)
    assert [f["n"] for f in frames] == list(range(250))
    assert not any(f["D"] for f in frames) and frames[-1]["T"]
    src.close()
