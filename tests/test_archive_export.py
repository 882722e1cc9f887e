"""MP4 export without sockets: synthetic recorders (simulator clips) stitched and muxed,
read back with PyAV (an FFmpeg demuxer and decoder this project did not write) and
checked with ffprobe: every frame counter once, in order, timestamps from capture
times, no decode error."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import av
import pytest
import structlog

from rmfproxy.archive.coverage import Interval
from rmfproxy.archive.export import (
    ExportError,
    ExportResult,
    ExportTooLong,
    NoFootage,
    RecorderSource,
    export_recording,
    mux_mp4,
    undecodable_leading_dropped,
)
from rmfproxy.archive.replay_client import Codec, ReplayTimeout
from rmfproxy.archive.stitch import ArchiveFrame, StitchedFrame, stitch
from rmfproxy.rtp import h264, h265
from rmfproxy.sim.encoder import EncodedClip, encode_clip
from rmfproxy.sim.marker import find_marker, rewrite_marker

FPS = 25
GOP = 10
BASE = 1_790_000_000.0  # capture times of frame n: BASE + n / FPS


@functools.cache
def clip(codec: Codec) -> EncodedClip:
    return encode_clip(codec, width=160, height=96, fps=FPS, gop=GOP, seconds=2.0)


def frame(codec: Codec, n: int, *, params: bool = True) -> ArchiveFrame:
    """Frame ``n`` of the looped clip, its marker rewritten to ``n``."""
    c = clip(codec)
    au = c.access_units[n % len(c.access_units)]
    nals = [bytearray(x) for x in au.nals]
    rewrite_marker(nals[au.marker_index], n, round((BASE + n / FPS) * 1e6))
    fmt = h264.FORMAT if codec == "h264" else h265.FORMAT
    kept = [bytes(x) for x in nals if params or fmt.nal_type(x) not in fmt.param_types]
    return ArchiveFrame(BASE + n / FPS, au.keyframe, tuple(kept))


def frames(codec: Codec, numbers: Iterable[int], *, params: bool = True) -> list[ArchiveFrame]:
    return [frame(codec, n, params=params) for n in numbers]


def read_back(data: bytes) -> tuple[list[int], list[float], list[bool], int, int]:
    """Counters, pts (seconds), keyframe flags, decoded pictures and decode errors."""
    counters: list[int] = []
    times: list[float] = []
    keys: list[bool] = []
    decoded = errors = 0
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            mark = find_marker(bytes(packet))
            assert mark is not None
            counters.append(mark[0])
            assert packet.pts is not None and packet.time_base is not None
            times.append(float(packet.pts * packet.time_base))
            keys.append(packet.is_keyframe)
            try:
                decoded += len(packet.decode())
            except av.error.FFmpegError:
                errors += 1
        try:
            decoded += len(stream.codec_context.decode(None))
        except av.error.FFmpegError:
            errors += 1
    return counters, times, keys, decoded, errors


def ffprobe_errors(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "probe.mp4"
    path.write_bytes(data)
    ffprobe = shutil.which("ffprobe")
    assert ffprobe is not None
    run = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return run.stderr


def params_of(codec: Codec) -> list[bytes]:
    c = clip(codec)
    return [*([c.vps] if c.vps else []), c.sps, c.pps]


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_mux_one_source_without_transcoding(codec: Codec, tmp_path: Path) -> None:
    got = stitch(BASE, BASE + 4.0, {"r1": frames(codec, range(0, 100))})
    out = io.BytesIO()
    size = mux_mp4(got.frames, codec, out, {"r1": params_of(codec)})
    data = out.getvalue()
    assert size == len(data) and data[4:8] == b"ftyp"
    counters, times, keys, decoded, errors = read_back(data)
    assert counters == list(range(0, 100))
    assert times == pytest.approx([n / FPS for n in range(100)], abs=1 / 90000)
    assert keys == [n % GOP == 0 for n in range(100)]
    assert (decoded, errors) == (100, 0)
    # the coded pictures went in as they were: the slices are byte for byte the same
    with av.open(io.BytesIO(data), "r") as container:
        first = next(p for p in container.demux(video=0) if p.size)
        slice_nal = clip(codec).access_units[0].nals[-1]
        assert slice_nal in bytes(first)
    assert ffprobe_errors(data, tmp_path) == ""


def test_mux_a_gap_is_a_timestamp_jump(tmp_path: Path) -> None:
    numbers = [*range(0, 50), *range(100, 150)]
    got = stitch(BASE, BASE + 6.0, {"r1": frames("h264", numbers)})
    assert got.gaps == [(BASE + 50 / FPS, BASE + 100 / FPS)]
    data = io.BytesIO()
    mux_mp4(got.frames, "h264", data, {})
    counters, times, _, decoded, errors = read_back(data.getvalue())
    assert counters == numbers
    assert times[50] - times[49] == pytest.approx(51 / FPS, abs=1e-4)
    assert (decoded, errors) == (100, 0)
    assert ffprobe_errors(data.getvalue(), tmp_path) == ""


def test_mux_gives_a_keyframe_without_parameter_sets_its_sources() -> None:
    # r2's keyframes carry no SPS/PPS (it sends them only in the SDP)
    r1 = frames("h264", [*range(0, 43)])
    r2 = frames("h264", range(0, 100), params=False)
    got = stitch(BASE, BASE + 4.0, {"r1": r1, "r2": r2})
    assert got.seams == 1
    data = io.BytesIO()
    mux_mp4(got.frames, "h264", data, {"r1": params_of("h264"), "r2": params_of("h264")})
    counters, _, _, decoded, errors = read_back(data.getvalue())
    assert counters == list(range(0, 100)) and (decoded, errors) == (100, 0)
    only_r2 = stitch(BASE, BASE + 4.0, {"r2": r2})
    with pytest.raises(ExportError, match="no parameter sets from r2"):
        mux_mp4(only_r2.frames, "h264", io.BytesIO(), {})


def test_rasl_pictures_after_a_cra_that_starts_a_piece_are_dropped() -> None:
    def f(n: int, *types: int, seam: bool = False) -> StitchedFrame:
        nals = tuple(bytes([t << 1, 1]) + b"x" for t in types)
        return StitchedFrame(ArchiveFrame(t(n), 21 in types, nals), "r1", seam=seam)

    cra, rasl_n, rasl_r, trail, sei = 21, 8, 9, 1, 39
    frames = [
        f(0, cra),  # the file starts at a CRA: its RASL pictures cannot be decoded
        f(1, sei, rasl_n),
        f(2, rasl_r),
        f(3, trail),
        f(4, rasl_n),  # not after a piece's start: kept (the decoder has its references)
        f(5, cra, seam=True),
        f(6, rasl_r),
        f(7, trail),
    ]
    kept = undecodable_leading_dropped(h265.FORMAT, frames)
    assert [round((x.capture_time - BASE) * FPS) for x in kept] == [0, 3, 4, 5, 7]
    assert undecodable_leading_dropped(h264.FORMAT, frames) == frames


# export_recording with synthetic recorders ------------------------------------------------


class FakeJournal:
    def __init__(self, intervals: dict[str, list[Interval]]) -> None:
        self._intervals = intervals
        self.asked: list[tuple[str, float, float]] = []

    async def intervals(self, camera: str, start: float, end: float) -> dict[str, list[Interval]]:
        self.asked.append((camera, start, end))
        return self._intervals


class FakeRecorder:
    """Replays its recorded frame numbers as an ONVIF recorder would: from the keyframe
    at or before the start, up to the end."""

    def __init__(self, name: str, numbers: Iterable[int], codec: Codec = "h264") -> None:
        self.name = name
        self.recorded = frames(codec, numbers)
        self.codec: Codec | None = codec
        self.reads: list[tuple[float, float]] = []
        self.fail = False

    async def frames(self, start: float, end: float) -> AsyncIterator[ArchiveFrame]:
        self.reads.append((start, end))
        keys = [f for f in self.recorded if f.keyframe and f.capture_time <= start]
        first = keys[-1].capture_time if keys else start
        for f in self.recorded:
            if first <= f.capture_time < end:
                if self.fail:
                    raise ReplayTimeout("rtsp://127.0.0.1:1/cam: no media")
                yield f

    def sdp_parameter_sets(self) -> list[bytes]:
        return params_of("h264")


SOURCES = [
    RecorderSource("r1", "rtsp://127.0.0.1:1/cam"),
    RecorderSource("r2", "rtsp://127.0.0.1:2/cam"),
]


def t(n: float) -> float:
    return BASE + n / FPS


async def test_export_stitches_two_recorders_frozen_in_turn() -> None:
    # r1 recorded nothing for frames 60..134, r2 nothing for 200..274; the journal
    # over-claims each by half a second, as health sampling does
    r1 = FakeRecorder("r1", [*range(0, 60), *range(135, 400)])
    r2 = FakeRecorder("r2", [*range(0, 200), *range(275, 400)])
    journal = FakeJournal(
        {"r1": [(t(0), t(72)), (t(140), t(400))], "r2": [(t(0), t(212)), (t(280), t(400))]}
    )
    fakes = {"r1": r1, "r2": r2}
    with structlog.testing.capture_logs() as logs:
        result = await export_recording(
            "cam",
            t(5),
            t(380),
            journal=journal,
            sources=SOURCES,
            max_seconds=60,
            client=lambda src: fakes[src.name],
        )
    seams = [(e["previous"], e["source"]) for e in logs if e["event"] == "archive.export_seam"]
    assert seams == [("r1", "r2"), ("r2", "r1")]
    assert journal.asked == [("cam", t(5), t(380))]
    assert r2.reads == [(t(72) - 2.0, t(140) + 2.0)]  # only around r1's hole
    assert result.data is not None
    counters, _, _, decoded, errors = read_back(result.data)
    assert counters == list(range(0, 380))  # from the keyframe before the start
    assert (decoded, errors) == (380, 0)
    assert result.seams == 2 and result.gaps == [] and result.errors == {}
    assert result.per_source["r2"] > 0 and result.size == len(result.data)


async def test_export_keeps_a_span_no_recorder_has_as_a_gap(tmp_path: Path) -> None:
    r1 = FakeRecorder("r1", [*range(0, 60), *range(100, 200)])
    r2 = FakeRecorder("r2", [*range(0, 50), *range(110, 200)])
    journal = FakeJournal({"r1": [(t(0), t(60)), (t(100), t(200))], "r2": [(t(0), t(200))]})
    fakes = {"r1": r1, "r2": r2}
    dest = tmp_path / "out.mp4"
    result = await export_recording(
        "cam",
        t(0),
        t(200),
        journal=journal,
        sources=SOURCES,
        max_seconds=60,
        dest=dest,
        client=lambda src: fakes[src.name],
    )
    assert result.data is None and dest.stat().st_size == result.size
    counters, *_, errors = read_back(dest.read_bytes())
    assert counters == [*range(0, 60), *range(100, 200)] and errors == 0
    assert len(result.gaps) == 1 and result.gaps[0] == pytest.approx((t(60), t(100)))


async def export(
    fakes: dict[str, FakeRecorder], journal: dict[str, list[Interval]], start: float, end: float
) -> object:
    return await export_recording(
        "cam",
        start,
        end,
        journal=FakeJournal(journal),
        sources=SOURCES,
        max_seconds=60,
        client=lambda src: fakes[src.name],
    )


async def test_export_errors_too_long_no_footage_and_a_failing_recorder() -> None:
    fakes = {"r1": FakeRecorder("r1", range(0, 100)), "r2": FakeRecorder("r2", range(0, 100))}
    with pytest.raises(ExportTooLong, match="at most 60 s"):
        await export(fakes, {}, t(0), t(0) + 61)
    with pytest.raises(NoFootage, match="no recorder covered"):
        await export(fakes, {"r1": []}, t(0), t(50))
    # the journal says r1 had it, but r1's archive is gone: nothing at all
    empty = {"r1": FakeRecorder("r1", []), "r2": FakeRecorder("r2", [])}
    with pytest.raises(NoFootage, match="no recorder returned footage"):
        await export(empty, {"r1": [(t(0), t(50))]}, t(0), t(50))
    with pytest.raises(ValueError, match="end must be later"):
        await export(fakes, {}, t(5), t(5))


async def test_export_asks_the_other_recorders_for_what_a_failing_one_did_not_return() -> None:
    fakes = {"r1": FakeRecorder("r1", range(0, 100)), "r2": FakeRecorder("r2", range(0, 100))}
    fakes["r1"].fail = True
    result = await export(fakes, {"r1": [(t(0), t(100))]}, t(0), t(90))
    assert isinstance(result, ExportResult) and result.data is not None
    assert fakes["r2"].reads == [(t(0) - 2.0, t(90))]
    counters, *_, errors = read_back(result.data)
    assert counters == list(range(0, 90)) and errors == 0
    assert result.errors == {"r1": "rtsp://127.0.0.1:1/cam: no media"}
    # nobody has it: the failure is in the message
    fakes["r2"].fail = True
    with pytest.raises(NoFootage, match=r"r1: rtsp://127\.0\.0\.1:1/cam: no media"):
        await export(fakes, {"r1": [(t(0), t(100))]}, t(0), t(90))
