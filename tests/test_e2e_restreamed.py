"""End to end with real re-streaming recorders: one simulated camera, pulled and re-served by
two GStreamer recorders (tests/peers/gst_restream.py: their own arrival-derived timestamps
with jitter and drift, their own parameter-set schedule, AUD/SEI and packetization), merged
by the proxy (hitless), read by three clients this project did not write: the FFmpeg
command line (showinfo), GStreamer's gst-launch-1.0 and FFmpeg's demuxer through PyAV.

Two recorders of one camera agree on the slices and on nothing else; the proxy must still
deliver every frame once: no more frames than the camera made (plus one GOP of start-up
slack), no decoder error, no frame counter repeated or skipped, and the picture back within
0.2 s after a recorder is killed and 0.5 s after one silently freezes (SIGSTOP). Each
recorder's thumbnail (admin API) decodes too, whatever its parameter-set schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import av
import pytest
import structlog

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.sim.marker import RMF_UUID
from rmfproxy.sim.probe import ProbeResult, read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.peers.restream import (
    DEFAULT_PAIR,
    PeerUnavailable,
    RecorderSettings,
    Restreamers,
    restreamed,
)
from tests.support import wait_ready
from tests.test_e2e_external import gst_clean_exit

pytestmark = [pytest.mark.e2e, pytest.mark.external, pytest.mark.asyncio(loop_factories=["uvloop"])]

Codec = Literal["h264", "h265"]
FPS = 25
GOP = 25
SIZE = (320, 240)
CAMERA = "lobby"
STEADY_SECONDS = 8.0
FAULT_SECONDS = 16.0
KILL_AT = 3.0
RESTART_AT = 4.0
FREEZE_AT = 10.0
FREEZE_LATEST = 13.0
FREEZE_FOR = 2.5
KILL_GAP = 0.2
FREEZE_GAP = 0.5
BAD_WORDS = re.compile(
    r"error|corrupt|missed|non.monoton|concealing|invalid|no frame|non-existing|"
    r"decode_slice|reference|duplicate|bad cseq",
    re.IGNORECASE,
)
MARKER_UUID_LINE = "UUID=" + "-".join(
    RMF_UUID.hex()[a:b] for a, b in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
)
DEPAY = {
    "h264": "rtph264depay ! h264parse ! avdec_h264",
    "h265": "rtph265depay ! h265parse ! avdec_h265",
}


# Two ways two recorders of one camera differ. A: parameter sets before every keyframe vs
# every 2 s before any frame (g2 with AUDs, g1 with its own SEI). B: before every keyframe
# vs only in the SDP (sprop), other jitter, drift, MTU and STAP-A/AP aggregation.
PAIR_A = DEFAULT_PAIR
PAIR_B = (
    RecorderSettings(
        "g1", jitter_ms=15, drift_ppm=100, mtu=1200, aggregate="max", sei=True, seed=3
    ),
    RecorderSettings(
        "g2",
        jitter_ms=30,
        drift_ppm=-150,
        config_interval=0,
        mtu=900,
        aggregate="none",
        aud=True,
        seed=4,
    ),
)


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")


# the setup ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def restreamed_proxy(
    codec: Codec, pair: tuple[RecorderSettings, ...]
) -> AsyncIterator[tuple[Restreamers, Proxy]]:
    """Camera -> recorders g1, g2 (GStreamer re-streams) -> proxy (g1 primary, hitless)."""
    need("gst-launch-1.0")
    need("ffmpeg")
    spec = SimSpec(
        recorders=[("cam", 0)], cameras=[CAMERA], codec=codec, fps=FPS, gop=GOP, size=SIZE
    )
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(SimCluster(spec))
        try:
            rs = await stack.enter_async_context(
                restreamed(sim.url("cam", CAMERA), codec, pair, path="/" + CAMERA)
            )
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        cfg = parse_config(
            {
                "rtsp": {"listen": "127.0.0.1:0"},
                "api": {"listen": "127.0.0.1:0"},
                "cameras": {
                    CAMERA: {
                        "sources": [
                            {"url": rs.url("g1"), "name": "g1"},
                            {"url": rs.url("g2"), "name": "g2"},
                        ]
                    }
                },
            }
        )
        proxy = Proxy(cfg)
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        await wait_ready(proxy, (CAMERA,), limit=20)
        yield rs, proxy


# the clients -------------------------------------------------------------------------------


@dataclass
class ToolResult:
    """What one command-line client printed, each line with its arrival (monotonic) time."""

    name: str
    rc: int | None
    lines: list[tuple[float, str]]
    started: float
    ended: float
    frames: list[float] = field(default_factory=list)
    """Arrival time of each decoded frame."""
    counters: list[int] = field(default_factory=list)
    """The simulator's frame counter of each frame (FFmpeg only: from showinfo's SEI dump)."""

    def bad_lines(self) -> list[str]:
        return [
            text
            for _, text in self.lines
            if BAD_WORDS.search(text) and "Parsed_showinfo" not in text
        ]

    def tail(self) -> str:
        return "\n".join(text for _, text in self.lines[-15:])


async def run_timed(
    name: str, cmd: list[str], interrupt_after: float | None, limit: float
) -> ToolResult:
    """Run ``cmd``, time-stamping each output line; SIGINT after ``interrupt_after`` s."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        limit=1 << 20,
    )
    lines: list[tuple[float, str]] = []

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            lines.append((time.monotonic(), line.decode(errors="replace").rstrip()))

    reader = asyncio.create_task(read())
    try:
        if interrupt_after is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), interrupt_after)
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), limit)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
            lines.append((time.monotonic(), f"{name}: killed after {limit} s"))
        await reader
    return ToolResult(name, proc.returncode, lines, started, time.monotonic())


async def ffmpeg_client(url: str, transport: str, seconds: float) -> ToolResult:
    # -fps_mode passthrough -enc_time_base -1: keep the stream's own timestamps at 1/90000.
    # By default the output runs at a constant 25 fps in a 1/25 time base, where two
    # jittered timestamps can round to one tick and the null muxer logs "non monotonically
    # increasing dts", a CLI artefact; this way that line means the stream went backwards.
    cmd = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "info"]
    cmd += ["-rtsp_transport", transport, "-i", url, "-t", str(seconds)]
    cmd += ["-fps_mode", "passthrough", "-enc_time_base", "-1"]
    cmd += ["-vf", "showinfo", "-f", "null", "-"]
    r = await run_timed(f"ffmpeg {transport}", cmd, None, seconds + 15)
    marker_next = False
    for at, text in r.lines:
        if re.search(r"Parsed_showinfo.*\] n:\s*\d+ pts:", text):
            r.frames.append(at)
        elif text.endswith(MARKER_UUID_LINE):
            marker_next = True
        elif marker_next and "User Data=" in text:
            marker_next = False
            ascii_text = bytes.fromhex(text.rsplit("=", 1)[1].strip()).decode(errors="replace")
            r.counters.append(int(ascii_text[:16], 16))
    return r


async def gstreamer_client(url: str, codec: Codec, transport: str, seconds: float) -> ToolResult:
    # identity silent=false + -v prints one "last-message" line per decoded frame; stdbuf
    # makes gst-launch's stdout line-buffered so each line is timed when the frame came.
    pipeline = (
        f"rtspsrc location={url} protocols={transport} latency=200 ! {DEPAY[codec]} "
        "! identity name=frames silent=false ! fakesink sync=false"
    )
    cmd = ["gst-launch-1.0", "-v", "-e", *pipeline.split()]
    if shutil.which("stdbuf"):
        cmd = ["stdbuf", "-oL", "-eL", *cmd]
    r = await run_timed(f"gst-launch {transport}", cmd, seconds, 10)
    r.frames = [at for at, text in r.lines if "frames: last-message = chain" in text]
    return r


async def thumbnail_sizes(proxy: Proxy) -> dict[str, tuple[int, int] | str]:
    """Each recorder's thumbnail from the admin API, decoded: its size, or what went wrong."""
    out: dict[str, tuple[int, int] | str] = {}
    async with aiohttp.ClientSession() as http:
        for name in ("g1", "g2"):
            url = proxy.api_url(f"/api/v1/cameras/{CAMERA}/sources/{name}/thumbnail.jpg")
            async with http.get(url) as r:
                if r.status != 200 or r.content_type != "image/jpeg":
                    out[name] = f"HTTP {r.status} {r.content_type}"
                    continue
                jpeg = await r.read()
            with av.open(io.BytesIO(jpeg)) as c:
                frame = next(c.decode(video=0))
            out[name] = (frame.width, frame.height)
    return out


def gst_bad_lines(r: ToolResult) -> list[str]:
    return [t for _, t in r.lines if t.startswith(("ERROR", "WARNING")) or "CRITICAL" in t]


def repeated(counters: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(counters) if b <= a)


def lost(counters: list[int]) -> int:
    return sum(b - a - 1 for a, b in itertools.pairwise(counters) if b > a + 1)


def max_gap(times: list[float], start: float = float("-inf"), end: float = float("inf")) -> float:
    """Longest interval between consecutive frames that ends within [start, end]."""
    gaps = [b - a for a, b in itertools.pairwise(times) if start <= b <= end]
    return max(gaps, default=0.0)


@dataclass
class Reads:
    ffmpeg: ToolResult
    gst: ToolResult
    probe: ProbeResult
    probe_seconds: float
    """Wall-clock time of the PyAV session, from before it connected to its end."""
    logs: list[dict[str, Any]] = field(default_factory=list)
    """The proxy's log events during the reads (which client sessions ended how)."""


async def read_all(url: str, codec: Codec, transport: str, seconds: float) -> Reads:
    async def probe() -> tuple[ProbeResult, float]:
        t = time.monotonic()
        r = await asyncio.to_thread(read_rtsp, url, transport=transport, seconds=seconds)  # type: ignore[arg-type]
        return r, time.monotonic() - t

    with structlog.testing.capture_logs() as logs:
        ff, gst, (p, took) = await asyncio.gather(
            ffmpeg_client(url, transport, seconds),
            gstreamer_client(url, codec, transport, seconds),
            probe(),
        )
    return Reads(ff, gst, p, took, logs)


def summary(r: Reads) -> str:
    p = r.probe
    return (
        f"ffmpeg: {len(r.ffmpeg.frames)} frames, repeated {repeated(r.ffmpeg.counters)}, "
        f"lost {lost(r.ffmpeg.counters)}, {len(r.ffmpeg.bad_lines())} error lines, "
        f"max gap {max_gap(r.ffmpeg.frames):.2f}s, rc {r.ffmpeg.rc}; "
        f"gst-launch: {len(r.gst.frames)} frames, {len(gst_bad_lines(r.gst))} ERROR/WARNING, "
        f"max gap {max_gap(r.gst.frames):.2f}s, rc {r.gst.rc}; "
        f"PyAV: {p.frames_decoded} frames, {p.decode_errors} decode errors, "
        f"{p.stream_warnings} warnings, repeated {p.repeated()}, lost {p.lost()}, "
        f"max gap {p.max_gap_seconds():.2f}s, error {p.error}"
    )


def made(wall_seconds: float) -> float:
    """Frames the camera made while a client was connected, plus one GOP: a client starts
    on the proxy's buffered GOP (up to one GOP of older frames, sent at once)."""
    return wall_seconds * FPS + GOP


def check_clean(r: Reads, seconds: float) -> list[str]:
    """Everything the issue asks of every client, as a list of failures."""
    failures = []
    ff, gst, p = r.ffmpeg, r.gst, r.probe
    if ff.rc != 0:
        failures.append(f"ffmpeg exited {ff.rc}:\n{ff.tail()}")
    # -t stops FFmpeg after ``seconds`` of stream time, whatever the wall clock says.
    if len(ff.frames) > made(seconds):
        failures.append(f"ffmpeg: {len(ff.frames)} frames in {seconds:.0f} s of stream time")
    if len(ff.frames) < (seconds - 2) * FPS:
        failures.append(f"ffmpeg got only {len(ff.frames)} frames")
    if ff.bad_lines():
        failures.append(f"ffmpeg error lines ({len(ff.bad_lines())}): {ff.bad_lines()[:5]}")
    if repeated(ff.counters) or lost(ff.counters):
        failures.append(
            f"ffmpeg counters: repeated {repeated(ff.counters)}, lost {lost(ff.counters)}"
        )
    gst_out = "\n".join(text for _, text in gst.lines)
    if gst.rc != 0 and not gst_clean_exit(gst.rc or 0, gst_out, r.logs):
        failures.append(f"gst-launch exited {gst.rc}:\n{gst.tail()}")
    gst_wall = gst.ended - gst.started
    if len(gst.frames) > made(gst_wall):
        failures.append(f"gst-launch: {len(gst.frames)} frames in {gst_wall:.1f} s")
    if len(gst.frames) < (seconds - 3) * FPS:
        failures.append(f"gst-launch got only {len(gst.frames)} frames")
    if gst_bad_lines(gst) and not gst_clean_exit(gst.rc or 0, gst_out, r.logs):
        failures.append(f"gst-launch ERROR/WARNING: {gst_bad_lines(gst)[:5]}")
    if p.error is not None:
        failures.append(f"PyAV: {p.error}")
    if p.frames_decoded > made(r.probe_seconds):
        failures.append(f"PyAV: {p.frames_decoded} frames in {r.probe_seconds:.1f} s")
    if p.frames_decoded < (seconds - 2) * FPS:
        failures.append(f"PyAV got only {p.frames_decoded} frames")
    if p.decode_errors or p.stream_warnings:
        failures.append(
            f"PyAV: {p.decode_errors} decode errors, {p.stream_warnings} warnings: {p.warnings[:5]}"
        )
    if p.repeated() or p.lost():
        failures.append(f"PyAV counters: repeated {p.repeated()}, lost {p.lost()}")
    return failures


# the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "pair"), [("h264", "A"), ("h265", "B")])
async def test_restreamed_feeds_merge_clean(codec: Codec, pair: str) -> None:
    # No fault at all: two re-streams of one camera, merged, must look like the camera.
    async with restreamed_proxy(codec, PAIR_A if pair == "A" else PAIR_B) as (_rs, proxy):
        reads = await read_all(proxy.url(CAMERA), codec, "tcp", STEADY_SECONDS)
        thumbnails = await thumbnail_sizes(proxy)
        active = active_name(proxy)
    failures = check_clean(reads, STEADY_SECONDS)
    # The relayed recorder's and its standby's thumbnails decode, the picture's proportions.
    want = (320, 320 * SIZE[1] // SIZE[0])
    failures += [
        f"thumbnail of {n} ({active} relayed): {got}"
        for n, got in thumbnails.items()
        if got != want
    ]
    for name, times in (
        ("ffmpeg", reads.ffmpeg.frames),
        ("gst-launch", reads.gst.frames),
        ("PyAV", reads.probe.arrivals),
    ):
        if max_gap(times, times[0] + 1.0 if times else 0.0) > FREEZE_GAP:
            failures.append(f"{name}: picture gone for {max_gap(times):.2f} s without a fault")
    assert not failures, "\n".join([summary(reads), *failures])


async def wait_flowing(proxy: Proxy, name: str, limit: float) -> bool:
    """Until the proxy has ``name`` connected and receiving again (or ``limit`` passes)."""
    feed = proxy.feeds[CAMERA]
    slot = next(s for s in feed.slots if s.name == name)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = slot.packets
        await asyncio.sleep(0.25)
        if slot.connected and slot.packets > before:
            return True
    return False


def active_name(proxy: Proxy) -> str:
    feed = proxy.feeds[CAMERA]
    name = feed.source_name(feed.active)
    assert name is not None, "no active source"
    return name


@pytest.mark.parametrize(
    ("codec", "transport", "pair"),
    [("h264", "tcp", "A"), ("h264", "udp", "B"), ("h265", "tcp", "B"), ("h265", "udp", "A")],
)
async def test_restreamed_kill_restart_freeze(codec: Codec, transport: str, pair: str) -> None:
    # One read through three faults: the active recorder is killed (its process dies), comes
    # back on its port, then the active one freezes (SIGSTOP) and thaws.
    async with restreamed_proxy(codec, PAIR_A if pair == "A" else PAIR_B) as (rs, proxy):
        url = proxy.url(CAMERA)
        t0 = time.monotonic()
        reading = asyncio.create_task(read_all(url, codec, transport, FAULT_SECONDS))
        try:
            await asyncio.sleep(KILL_AT)
            killed = active_name(proxy)
            t_kill = time.monotonic()
            rs[killed].kill()
            await asyncio.sleep(max(0.0, t0 + RESTART_AT - time.monotonic()))
            await rs[killed].restart()
            # The freeze needs a standby: the restarted recorder, back with the proxy.
            back = await wait_flowing(proxy, killed, limit=t0 + FREEZE_LATEST - time.monotonic())
            await asyncio.sleep(max(0.0, t0 + FREEZE_AT - time.monotonic()))
            frozen = active_name(proxy)
            t_freeze = time.monotonic()
            rs[frozen].freeze()
            await asyncio.sleep(FREEZE_FOR)
            rs[frozen].resume()
            reads = await reading
        finally:
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
        switches = [(s.from_source, s.to_source, s.reason) for s in proxy.feeds[CAMERA].switches]
    failures = check_clean(reads, FAULT_SECONDS)
    if not back:
        failures.append(f"the restarted recorder {killed} was not back with the proxy in time")
    for name, times in (
        ("ffmpeg", reads.ffmpeg.frames),
        ("gst-launch", reads.gst.frames),
        ("PyAV", reads.probe.arrivals),
    ):
        kill_gap = max_gap(times, t_kill, t_kill + 3.0)
        freeze_gap = max_gap(times, t_freeze, t_freeze + FREEZE_FOR + 1.5)
        if kill_gap > KILL_GAP:
            failures.append(f"{name}: picture gone {kill_gap:.2f} s after killing {killed}")
        if freeze_gap > FREEZE_GAP:
            failures.append(f"{name}: picture gone {freeze_gap:.2f} s after freezing {frozen}")
        if times and max_gap(times, times[0] + 1.0) > FREEZE_GAP:
            failures.append(f"{name}: picture gone {max_gap(times, times[0] + 1.0):.2f} s")
    assert not failures, "\n".join([summary(reads), f"switches: {switches}", *failures])
