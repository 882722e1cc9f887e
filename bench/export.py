"""Export throughput: MB/s of MP4 for a long span stitched from two recorders.

Two simulated recorders (in this process, 127.0.0.1, port 0) hold the same recorded
history of one camera (a looped clip at the requested bitrate); r1 misses a stretch in
the middle (``--hole`` seconds), so the export reads r1, then r2 for the hole, then r1
again: two seams. The journal is a stand-in built from the recorders' own spans. The
export (``rmfproxy.archive.export.export_recording``: ONVIF replays with
``Rate-Control: no`` over TCP, stitch, PyAV MP4 mux) writes a temporary file.

The simulator serves the replays from the same process and event loop, so the time
includes serving them (packetizing, RTP, TCP over loopback): an export from real
recorders spends that CPU elsewhere. Prints one JSON document on stdout.

    .venv/bin/python bench/export.py                  # 10 min, 1280x720, 4 Mbit/s, 25 fps
    .venv/bin/python bench/export.py --quick          # 10 s, small: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from rmfproxy.archive.coverage import Interval
from rmfproxy.archive.export import RecorderSource, export_recording
from rmfproxy.log import configure_logging
from rmfproxy.sim.encoder import encode_clip
from rmfproxy.sim.marker import find_marker
from rmfproxy.sim.recorder import SimRecorder


class ArchiveJournal:
    """The journal's answer made from what the recorders really recorded."""

    def __init__(self, recorders: dict[str, SimRecorder], since: float = 0.0) -> None:
        self.recorders = recorders
        self.since = since

    def history_start(self, camera: str) -> float:
        return self.since

    async def intervals(self, camera: str, start: float, end: float) -> dict[str, list[Interval]]:
        return {name: rec.archive.spans(camera) for name, rec in self.recorders.items()}


@dataclass
class History:
    """Two in-process recorders holding the same history, r1 with a hole in the middle."""

    recorders: dict[str, SimRecorder]
    first: int
    last: int
    hole: range
    fps: int
    encode_s: float
    fill_s: float

    @property
    def start(self) -> float:
        return self.first / self.fps

    @property
    def end(self) -> float:
        return (self.last + 1) / self.fps

    def sources(self) -> list[RecorderSource]:
        return [RecorderSource(name, rec.url("cam")) for name, rec in self.recorders.items()]

    async def stop(self) -> None:
        for rec in self.recorders.values():
            await rec.stop()


async def make_history(args: argparse.Namespace) -> History:
    """Encode the clip, start both recorders, fill ``args.seconds`` of history."""
    width, height = (int(x) for x in args.size.split("x"))
    began = time.perf_counter()
    clip = encode_clip(
        "h264",
        width=width,
        height=height,
        fps=args.fps,
        gop=args.gop,
        bitrate=args.bitrate,
        seconds=4.0,
    )
    encode_s = time.perf_counter() - began
    recs = {
        name: SimRecorder(name, {"cam": clip}, seed=i, retention=args.seconds + 120)
        for i, name in enumerate(("r1", "r2"))
    }
    for rec in recs.values():
        rec.archive.cameras["cam"].max_bytes = 8 << 30
        await rec.start()
        rec.freeze()  # only the history filled below
    fps = args.fps
    first = int((time.time() - args.seconds - 60) * fps) // args.gop * args.gop
    last = first + int(args.seconds * fps) - 1
    hole = range(
        first + int((args.seconds - args.hole) / 2 * fps),
        first + int((args.seconds + args.hole) / 2 * fps),
    )
    began = time.perf_counter()
    for n in range(first, last + 1):
        if n not in hole:
            recs["r1"].cameras["cam"].frame_packets(n)
        recs["r2"].cameras["cam"].frame_packets(n)
    fill_s = time.perf_counter() - began
    return History(recs, first, last, hole, fps, encode_s, fill_s)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(x) for x in args.size.split("x"))
    history = await make_history(args)
    recs, first, last, fps = history.recorders, history.first, history.last, history.fps
    encode_s, fill_s = history.encode_s, history.fill_s
    start, end = first / fps, (last + 1) / fps
    sources = history.sources()
    try:
        with tempfile.TemporaryDirectory(prefix="rmfproxy-bench-") as tmp:
            dest = Path(tmp) / "export.mp4"
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            result = await export_recording(
                "cam",
                start,
                end,
                journal=ArchiveJournal(recs),
                sources=sources,
                max_seconds=args.seconds + 1,
                dest=dest,
            )
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            checked = _check(dest, first, last) if args.verify else None
    finally:
        await history.stop()
    mb = result.size / 1e6
    return {
        "span_seconds": round(end - start, 3),
        "size": f"{width}x{height}",
        "fps": fps,
        "gop": args.gop,
        "target_bitrate": args.bitrate,
        "recorded_bitrate": round(result.size * 8 / (end - start)),
        "frames": result.frames,
        "seams": result.seams,
        "gaps": len(result.gaps),
        "per_source": result.per_source,
        "mp4_mb": round(mb, 2),
        "export_seconds": round(wall, 3),
        "mp4_mb_per_second": round(mb / wall, 2),
        "realtime_factor": round((end - start) / wall, 1),
        "cpu_seconds": round(cpu, 3),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "encode_clip_seconds": round(encode_s, 2),
        "fill_archive_seconds": round(fill_s, 2),
        "verified": checked,
        "note": "in-process simulated recorders: the time includes serving the replays",
    }


def _check(path: Path, first: int, last: int) -> dict[str, Any]:
    """Every frame counter once, in order; decode errors (a full decode: slow)."""
    counters = []
    errors = 0
    with av.open(str(path), "r") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            mark = find_marker(bytes(packet))
            counters.append(mark[0] if mark else -1)
            try:
                packet.decode()
            except av.error.FFmpegError:
                errors += 1
    return {
        "every_frame_once_in_order": counters == list(range(first, last + 1)),
        "decode_errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="span exported")
    ap.add_argument("--hole", type=float, default=30.0, help="seconds r1 did not record")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--gop", type=int, default=25)
    ap.add_argument("--bitrate", type=int, default=4_000_000)
    ap.add_argument("--verify", action="store_true", help="read the MP4 back and decode it")
    ap.add_argument("--quick", action="store_true", help="10 s at 320x240: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.hole, args.size, args.bitrate = 10.0, 2.0, "320x240", 500_000
        args.verify = True
    configure_logging("json", os.environ.get("BENCH_LOG", "error"))
    report = asyncio.run(run(args))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
