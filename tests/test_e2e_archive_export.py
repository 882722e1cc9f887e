"""End to end: two simulated recorders record one camera, r1 is frozen ~3 s and later r2
~3 s (never both); the proxy's coverage journal sees both holes; the exported MP4 of the
whole window, read by PyAV (FFmpeg's demuxer and decoder) and checked by ffprobe, has
every frame counter of the window exactly once, in order, and decodes without error."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import av
import pytest

from rmfproxy.archive.report import iso
from rmfproxy.archive.runner import CoverageJournal
from rmfproxy.sim.marker import find_marker
from rmfproxy.sim.runner import SimCluster
from tests.support import relay

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

FPS = 25
FREEZE = 3.0


async def wait_for(cond: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.05)


def both_live(journal: CoverageJournal) -> bool:
    return set(journal.core.live("lobby")) == {("lobby", "r1"), ("lobby", "r2")}


async def freeze(sim: SimCluster, journal: CoverageJournal, recorder: str) -> None:
    """Freeze ``recorder`` for FREEZE seconds; return once both are healthy again."""
    sim.recorders[recorder].freeze()
    await asyncio.sleep(FREEZE)
    sim.recorders[recorder].freeze(False)
    await wait_for(lambda: both_live(journal))
    await asyncio.sleep(1.0)


def read_mp4(data: bytes) -> tuple[list[int], int, int]:
    """Frame counters of the packets, decoded pictures, decode errors."""
    counters: list[int] = []
    decoded = errors = 0
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            mark = find_marker(bytes(packet))
            assert mark is not None, "a packet without the simulator's frame marker"
            counters.append(mark[0])
            try:
                decoded += len(packet.decode())
            except av.error.FFmpegError:
                errors += 1
        try:
            decoded += len(stream.codec_context.decode(None))
        except av.error.FFmpegError:
            errors += 1
    return counters, decoded, errors


@pytest.mark.timeout(60)
async def test_export_of_two_recorders_frozen_in_turn_has_every_frame_once(
    tmp_path: Path,
) -> None:
    archive = {"journal": str(tmp_path / "coverage.sqlite")}
    async with (
        relay(archive=archive, size=(160, 96), gop=10, fps=FPS) as (sim, proxy),
        aiohttp.ClientSession() as http,
    ):
        journal = proxy.journal
        assert journal is not None
        await wait_for(lambda: both_live(journal))
        await asyncio.sleep(0.6)
        start = time.time()
        await asyncio.sleep(1.0)
        await freeze(sim, journal, "r1")
        await freeze(sim, journal, "r2")
        end = time.time() - 0.5  # both recorders have recorded up to here

        # the journal has a hole in each source
        per = await journal.intervals("lobby", start, end)
        assert len(per["r1"]) == 2 and len(per["r2"]) == 2, per

        url = proxy.api_url(
            f"/api/v1/cameras/lobby/recording.mp4?start={iso(start)}&end={iso(end)}"
        )
        began = time.monotonic()
        async with http.get(url.replace("+", "%2B")) as r:
            body = await r.read()
            assert r.status == 200, body[:300]
            took = time.monotonic() - began
            assert r.headers["Content-Type"] == "video/mp4"
            assert r.headers["Content-Disposition"].startswith('attachment; filename="lobby-')
            seams, gaps = r.headers["X-Rmfproxy-Seams"], r.headers["X-Rmfproxy-Gaps"]

    counters, decoded, errors = read_mp4(body)
    first_in_window = math.ceil(round(start, 3) * FPS)
    last_in_window = math.ceil(round(end, 3) * FPS) - 1
    # from the keyframe at or before the start (GOP 10) to the last frame before the end
    assert first_in_window - 10 < counters[0] <= first_in_window
    assert counters == list(range(counters[0], last_in_window + 1)), _holes(counters)
    assert (decoded, errors) == (len(counters), 0)
    # r1 -> r2 at r1's freeze, r2 -> r1 when r1 is back; r2's freeze needs no seam
    assert (seams, gaps) == ("2", "0")
    assert took < 10, took

    path = tmp_path / "export.mp4"
    path.write_bytes(body)
    stderr, stdout = await asyncio.to_thread(ffprobe, path)
    assert stderr == ""
    assert stdout.strip() == f"stream,h264,{len(counters)}"


def ffprobe(path: Path) -> tuple[str, str]:
    """``ffprobe -v error`` of the file: (stderr, stdout with codec and frame count)."""
    exe = shutil.which("ffprobe")
    assert exe is not None
    entries = "stream=codec_name,nb_frames"
    run = subprocess.run(
        [exe, "-v", "error", "-show_entries", entries, "-of", "csv", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return run.stderr, run.stdout


def _holes(counters: list[int]) -> list[tuple[int, int]]:
    """Where the counters are not consecutive (for the failure message)."""
    return [(a, b) for a, b in itertools.pairwise(counters) if b != a + 1]
