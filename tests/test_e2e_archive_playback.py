"""End to end: stitched playback over RTSP from the proxy.

Two simulated recorders record one camera; r1 is killed (down, recording nothing) for
3 s and later r2 frozen for 3 s, never both. The proxy's journal sees both holes. A
replay of the window from the proxy's camera URL (``Require: onvif-replay``, ``Range:
clock=``, ``Rate-Control: no``) has every frame counter once, in order, capture times
rising, D at the two seams and nowhere else, and ends on T; GStreamer's rtspsrc in
ONVIF mode and FFmpeg (PyAV, ``Range: npt=``) read the history from the ``replay/``
URL and decode every frame once.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from rmfproxy.archive.replay_client import (
    ReplayAuthFailed,
    ReplayClient,
    ReplayError,
    ReplayStatusError,
)
from rmfproxy.archive.runner import CoverageJournal
from rmfproxy.sim.marker import find_marker
from rmfproxy.sim.probe import read_rtsp
from rmfproxy.sim.runner import SimCluster
from tests.replay_support import annexb_counters, decode_file, run_gst_replay
from tests.support import relay

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

FPS = 25
GOP = 10
DOWN = 3.0


async def wait_for(cond: Callable[[], bool], limit: float = 15.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.05)


def both_live(journal: CoverageJournal) -> bool:
    return set(journal.core.live("lobby")) == {("lobby", "r1"), ("lobby", "r2")}


async def recorders_down_in_turn(sim: SimCluster, journal: CoverageJournal) -> None:
    """r1 killed for DOWN seconds, then r2 frozen for DOWN seconds (never both)."""
    await sim.recorders["r1"].restart(DOWN)
    await wait_for(lambda: both_live(journal))
    await asyncio.sleep(1.0)
    sim.recorders["r2"].freeze()
    await asyncio.sleep(DOWN)
    sim.recorders["r2"].freeze(False)
    await wait_for(lambda: both_live(journal))
    await asyncio.sleep(1.0)


def counter(frame_nals: tuple[bytes, ...]) -> int:
    mark = find_marker(b"".join(frame_nals))
    assert mark is not None, "a frame without the simulator's marker"
    return mark[0]


def holes(counters: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in itertools.pairwise(counters) if b != a + 1]


@pytest.mark.timeout(120)
async def test_playback_stitched_across_both_recorders(tmp_path: Path) -> None:
    archive = {"journal": str(tmp_path / "coverage.sqlite")}
    with structlog.testing.capture_logs() as logs:
        async with relay(archive=archive, size=(160, 96), gop=GOP, fps=FPS) as (sim, proxy):
            journal = proxy.journal
            assert journal is not None and proxy.playback is not None
            await wait_for(lambda: both_live(journal))
            # The window starts over 1 s into the recorders' history (checked below: a
            # replay from the history's start begins before the window).
            await asyncio.sleep(1.1)
            start = time.time()
            await asyncio.sleep(1.0)
            await recorders_down_in_turn(sim, journal)
            end = time.time() - 0.5
            per = await journal.intervals("lobby", start, end)
            assert len(per["r1"]) == 2 and len(per["r2"]) == 2, per

            # 1. The camera URL with Require: onvif-replay, a clock range, as fast as read.
            client = ReplayClient(proxy.url("lobby"), name="proxy")
            began = time.monotonic()
            frames = []
            first_at = None
            async for f in client.frames(start, end):
                first_at = first_at or time.monotonic() - began
                frames.append(f)
            assert client.ended_by == "terminal", client.ended_by

            # 2. GStreamer's rtspsrc in ONVIF mode (no Require: the replay/ URL), the
            #    whole retained history, Rate-Control: no; at the same time
            # 3. FFmpeg (PyAV): PLAY with Range: npt=0.000- (the start of the history),
            #    real time, 3 s of it.
            async def gst_reads() -> tuple[tuple[list[int], str, int, int], float]:
                got = await gstreamer_onvif(proxy.url("replay/lobby"), tmp_path / "gst.h264")
                return got, time.time()

            (gst, history_end), probe = await asyncio.gather(
                gst_reads(),
                asyncio.to_thread(read_rtsp, proxy.url("replay/lobby"), seconds=3.0),
            )
            stats = proxy.playback.stats

    counters = [counter(f.nals) for f in frames]
    first_in_window = math.ceil(round(start, 3) * FPS)
    last_in_window = math.ceil(round(end, 3) * FPS) - 1
    # From the keyframe at or before the window's start: one GOP back at most (exactly one
    # when a keyframe's capture time and the start are within the clocks' millisecond).
    assert first_in_window - GOP <= counters[0] <= first_in_window
    assert counters == list(range(counters[0], last_in_window + 1)), holes(counters)
    times = [f.capture_time for f in frames]
    assert all(b > a for a, b in itertools.pairwise(times))
    # true capture times: the simulator's marker says when each frame was captured
    marks = [find_marker(b"".join(f.nals)) for f in frames]
    assert all(
        m is not None and abs(m[1] / 1e6 - f.capture_time) < 1e-3
        for m, f in zip(marks, frames, strict=True)
    )
    # D at the seams r1 -> r2 (r1 killed) and r2 -> r1 (back), none for r2's freeze
    assert sum(f.discontinuity for f in frames) == 2
    assert all(f.keyframe for f in frames if f.discontinuity)
    assert not any(f.end for f in frames)  # no real gap
    assert first_at is not None and first_at < 5.0, first_at
    seams = [e for e in logs if e["event"] == "archive.playback_seam"]
    assert [(e["previous"], e["source"]) for e in seams][:2] == [("r1", "r2"), ("r2", "r1")]
    assert stats.seams["lobby"] >= 2 and stats.sessions == 0  # every session closed

    gst_counters, gst_out, gst_decoded, gst_errors = gst
    assert gst_counters, gst_out[-1500:]
    assert not holes(gst_counters), (holes(gst_counters), gst_out[-1500:])
    assert gst_counters[-1] >= math.floor((history_end - 1.5) * FPS), (
        gst_counters[-1],
        history_end * FPS,
    )
    assert gst_counters[0] <= first_in_window - FPS  # from the start of the history
    # GStreamer 1.22 may drop the first access unit of a replay (its keyframe): the rest
    # of that GOP then cannot be decoded; nothing else may fail.
    assert gst_decoded >= len(gst_counters) - GOP and gst_errors <= 1, (gst_decoded, gst_errors)

    assert probe.error is None and probe.decode_errors == 0
    assert probe.frames_decoded >= 2.0 * FPS and probe.first_frame_key
    assert probe.repeated() == 0 and probe.lost() == 0 and probe.beyond_span() <= 0


async def gstreamer_onvif(url: str, out: Path) -> tuple[list[int], str, int, int]:
    """rtspsrc onvif-mode=true onvif-rate-control=false to an Annex B file: counters,
    its output, decoded pictures, decode errors."""
    exe = shutil.which("gst-launch-1.0")
    if exe is None:
        pytest.skip("GStreamer not installed")
    output, _ = await run_gst_replay(exe, url, out, seconds=40)
    decoded, errors = await asyncio.to_thread(decode_file, out)
    return annexb_counters(out), output, decoded, errors


@pytest.mark.timeout(60)
async def test_playback_needs_the_users_rights_on_the_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RMF_TEST_ALICE", "alice-pw-9")
    monkeypatch.setenv("RMF_TEST_BOB", "bob-pw-9")
    users = [
        {"name": "alice", "password_env": "RMF_TEST_ALICE", "cameras": ["lobby"]},
        {"name": "bob", "password_env": "RMF_TEST_BOB", "cameras": ["gate"]},
    ]
    archive = {"journal": str(tmp_path / "coverage.sqlite")}
    async with relay(
        archive=archive, cameras=("lobby", "gate"), rtsp={"users": users}, size=(160, 96)
    ) as (_sim, proxy):
        journal = proxy.journal
        assert journal is not None
        await wait_for(lambda: both_live(journal))
        await asyncio.sleep(2.0)
        end = time.time() - 0.3
        start = end - 1.0
        alice = ReplayClient(proxy.url("lobby"), username="alice", password="alice-pw-9")
        got = await alice.fetch(start, end)
        assert len(got) >= FPS and got[0].keyframe
        numbers = [counter(f.nals) for f in got]
        assert not holes(numbers), holes(numbers)  # every picture once, in order
        for who, password in (("bob", "bob-pw-9"), ("alice", "wrong"), (None, None)):
            client = ReplayClient(proxy.url("lobby"), username=who, password=password)
            with pytest.raises(ReplayError) as err:
                await client.fetch(start, end)
            assert isinstance(err.value, ReplayAuthFailed | ReplayStatusError), err.value
            if who == "bob":  # authenticated, but not for this camera: 404 as for live
                assert isinstance(err.value, ReplayStatusError) and err.value.status == 404
        # the replay/ URL is the same camera: the same rights
        url = proxy.url("replay/lobby")
        ok, refused = await asyncio.gather(
            asyncio.to_thread(
                read_rtsp, url.replace("rtsp://", "rtsp://alice:alice-pw-9@"), seconds=2.0
            ),
            asyncio.to_thread(
                read_rtsp,
                url.replace("rtsp://", "rtsp://bob:bob-pw-9@"),
                seconds=2.0,
                open_timeout=3.0,
            ),
        )
    assert ok.error is None and ok.decode_errors == 0 and ok.frames_decoded > FPS
    assert ok.repeated() == 0 and ok.lost() == 0 and ok.beyond_span() <= 0
    assert refused.error is not None and refused.frames_decoded == 0
