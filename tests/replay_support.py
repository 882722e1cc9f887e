"""Pieces shared by the replay tests: GStreamer's rtspsrc in ONVIF mode writing an Annex B
file, and the simulator's frame counters read back from such a file."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import av

from rmfproxy.rtp import h264
from rmfproxy.sim.marker import find_marker


def gst_onvif_replay(exe: str, url: str, out: Path) -> list[str]:
    """gst-launch arguments: rtspsrc onvif-mode=true, onvif-rate-control=false (Rate-Control:
    no), TCP, H.264 access units to ``out`` as Annex B."""
    return [
        exe,
        "-e",  # SIGINT sends EOS first: the depayloader and parser flush what they hold
        "rtspsrc",
        f"location={url}",
        "onvif-mode=true",
        "onvif-rate-control=false",
        "protocols=tcp",
        "latency=0",
        "!",
        "rtph264depay",
        "!",
        "h264parse",
        "!",
        "video/x-h264,stream-format=byte-stream,alignment=au",
        "!",
        "filesink",
        f"location={out}",
        "sync=false",
        "buffer-mode=unbuffered",
    ]


def annexb_counters(path: Path) -> list[int]:
    """The simulator's frame counters in an Annex B file, in file order."""
    data = path.read_bytes() if path.exists() else b""
    return [m[0] for m in (find_marker(n) for n in h264.split_annexb(data)) if m]


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def run_gst_replay(exe: str, url: str, out: Path, *, seconds: float) -> tuple[str, bool]:
    """Run :func:`gst_onvif_replay` until it ends by itself or its file stops growing for
    2 s (or ``seconds`` passed). GStreamer usually ends at the recorder's RTCP BYE, not in every
    run; when it does not, it gets SIGINT, which (with ``-e``) sends an EOS through the
    pipeline, so the access units its depayloader and parser still hold are written too.
    Returns its output and whether it ended by itself."""
    proc = await asyncio.create_subprocess_exec(
        *gst_onvif_replay(exe, url, out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    size, still = -1, 0
    try:
        async with asyncio.timeout(seconds):
            while proc.returncode is None and still < 10:
                await asyncio.sleep(0.2)
                now = file_size(out)
                still = still + 1 if now == size and now > 0 else 0
                size = now
    except TimeoutError:
        pass
    by_itself = proc.returncode is not None
    if not by_itself:
        proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
    stdout, _ = await proc.communicate()
    return stdout.decode(errors="replace"), by_itself


def decode_file(path: Path) -> tuple[int, int]:
    """(pictures decoded, packets that failed to decode) of an Annex B H.264 file."""
    decoded = errors = 0
    if not path.exists():
        return 0, 0
    with av.open(str(path), format="h264") as container:
        for pkt in container.demux(video=0):
            try:
                decoded += len(pkt.decode())
            except av.error.FFmpegError:
                errors += 1
    return decoded, errors
