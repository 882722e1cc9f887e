"""Pieces shared by the replay tests: GStreamer's rtspsrc in ONVIF mode writing an Annex B
file, and the simulator's frame counters read back from such a file."""

from __future__ import annotations

from pathlib import Path

from rmfproxy.rtp import h264
from rmfproxy.sim.marker import find_marker


def gst_onvif_replay(exe: str, url: str, out: Path) -> list[str]:
    """gst-launch arguments: rtspsrc onvif-mode=true, onvif-rate-control=false (Rate-Control:
    no), TCP, H.264 access units to ``out`` as Annex B."""
    return [
        exe,
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
