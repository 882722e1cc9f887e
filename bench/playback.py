"""Stitched playback: seconds to the first frame, and how fast a long span plays.

The history of ``bench/export.py`` (two in-process simulated recorders, r1 with a hole
in the middle that r2 covers: two seams), served by the proxy's playback
(:class:`rmfproxy.archive.playback.StitchedPlayback` behind an :class:`RtspServer` on
127.0.0.1, port 0) and read by an ONVIF replay client over RTSP/TCP
(``Require: onvif-replay``, ``Range: clock=``, ``Rate-Control: no``):

- ``first_frame_*``: from the client's connect to its first frame, for a start at the
  beginning of the span and a start just before r1's hole (a seam right away), each
  ``--repeats`` times (median and max): DESCRIBE/SETUP/PLAY to the proxy, the proxy's
  replays of both recorders, stitching of the first part;
- ``full``: the whole span as fast as the client reads: MB/s of video and the
  real-time factor; every frame counter once, in order, D at the two seams.

The recorders run in the same process and event loop as the proxy and the client: the
times include serving the replays. Prints one JSON document on stdout.

    .venv/bin/python bench/playback.py              # 10 min, 1280x720, 4 Mbit/s, 25 fps
    .venv/bin/python bench/playback.py --quick      # 20 s, small: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.export import ArchiveJournal, History, make_history
from rmfproxy.archive.playback import StitchedPlayback
from rmfproxy.archive.replay_client import ReplayClient
from rmfproxy.log import configure_logging
from rmfproxy.serve.server import RtspServer
from rmfproxy.sim.marker import find_marker


async def first_frame(url: str, start: float, end: float) -> float:
    """Seconds from the client's start to its first frame."""
    client = ReplayClient(url, name="bench")
    t0 = time.perf_counter()
    frames = client.frames(start, end)
    try:
        await anext(frames)
        return time.perf_counter() - t0
    finally:
        await frames.aclose()


async def full(url: str, history: History) -> dict[str, Any]:
    client = ReplayClient(url, name="bench")
    t0 = time.perf_counter()
    counters: list[int] = []
    size = seams = 0
    async for f in client.frames(history.start, history.end):
        mark = find_marker(b"".join(f.nals))
        counters.append(mark[0] if mark else -1)
        size += f.size
        seams += f.discontinuity
    wall = time.perf_counter() - t0
    want = list(range(history.first, history.last + 1))
    return {
        "seconds": round(wall, 3),
        "video_mb": round(size / 1e6, 2),
        "video_mb_per_second": round(size / 1e6 / wall, 2),
        "realtime_factor": round((history.end - history.start) / wall, 1),
        "frames": len(counters),
        "every_frame_once_in_order": counters == want,
        "d_flags": seams,
        "ended_by": client.ended_by,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    history = await make_history(args)
    recs = history.recorders
    camera = recs["r1"].cameras["cam"]
    playback = StitchedPlayback(
        journal=ArchiveJournal(recs, since=history.start),
        sources=lambda cam: history.sources() if cam == "cam" else None,
        live_sdp=lambda cam: camera.sdp() if cam == "cam" else None,
        max_sessions=8,
    )
    server = RtspServer(lambda path: None, host="127.0.0.1", port=0, name="bench-proxy")
    server.replay = playback
    await server.start()
    url = f"rtsp://127.0.0.1:{server.port}/cam"
    try:
        at_start, at_seam = [], []
        seam_at = history.hole.start / history.fps - 1.0
        for _ in range(args.repeats):
            at_start.append(await first_frame(url, history.start, history.end))
            at_seam.append(await first_frame(url, seam_at, history.end))
        cpu0 = time.process_time()
        whole = await full(url, history)
        whole["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    finally:
        await server.close()
        await history.stop()

    def summary(xs: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(xs), 4), "max": round(max(xs), 4)}

    return {
        "benchmark": "playback",
        "span_seconds": round(history.end - history.start, 3),
        "size": args.size,
        "fps": args.fps,
        "gop": args.gop,
        "target_bitrate": args.bitrate,
        "hole_seconds": args.hole,
        "repeats": args.repeats,
        "first_frame_at_start_seconds": summary(at_start),
        "first_frame_at_seam_seconds": summary(at_seam),
        "full": whole,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "note": "in-process simulated recorders: the times include serving the replays",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="span of history")
    ap.add_argument("--hole", type=float, default=30.0, help="seconds r1 did not record")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--gop", type=int, default=25)
    ap.add_argument("--bitrate", type=int, default=4_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="20 s at 320x240: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.hole, args.size, args.bitrate = 20.0, 2.0, "320x240", 500_000
        args.repeats = 2
    configure_logging("json", os.environ.get("BENCH_LOG", "error"))
    report = asyncio.run(run(args))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
