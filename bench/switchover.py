"""Switchover benchmark: forced failovers measured by an independent client.

    .venv/bin/python bench/switchover.py [--switches 10] [--faults kill,freeze,stall,restart]

For each fault and each mode (``identical``: both recorders carry the same encoded
access units; ``different``: the standby serves a differently encoded copy with a longer
GOP; ``restreamed``: two GStreamer re-streaming recorders (tests/peers/gst_restream.py,
not this project's RTSP/RTP code) relay one simulated camera, each with its own arrival-
derived timestamps, jitter and drift, parameter-set schedule, AUD/SEI and
packetization), K failovers are forced on the active recorder while one FFmpeg client
(PyAV) reads the proxy for the whole series. Per failover, from the client's own frame
arrivals and the simulator's frame counters: the switch gap (longest interval between
consecutive frames around the fault), frames lost and repeated; per series, decode
errors and whether the client session survived. Prints JSON with p50/p99/max per
fault and mode. The simulator, the proxy and the client share this process (the
client in a thread); the numbers include that contention (in restreamed mode the
two recorders are processes of their own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.log import configure_logging
from rmfproxy.sim.probe import ProbeResult, read_rtsp
from rmfproxy.sim.recorder import SimRecorder
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.peers.restream import GstRecorder, restreamed

Recorder = SimRecorder | GstRecorder

FAULTS = ["kill", "freeze", "stall", "restart"]
EXTRA_FAULTS = ["close"]
"""``close``: only the TCP connections drop; the recorder takes new sessions at once."""
SETTLE = 2.5


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


async def break_(rec: Recorder, fault: str) -> None:
    # stall: media keeps flowing, the keepalive finds out; restart: gone for 2 s.
    if isinstance(rec, GstRecorder):
        # A real process: kill (crash, port gone), close (crash, back at once: mend),
        # freeze (SIGSTOP), restart (a new process on the same port after 2 s).
        if fault in ("kill", "close"):
            rec.kill()
        elif fault == "freeze":
            rec.freeze()
        elif fault == "restart":
            asyncio.get_running_loop().create_task(rec.restart(2.0))
        else:
            raise SystemExit(f"fault {fault!r} is not available in restreamed mode")
        return
    if fault == "restart":
        asyncio.get_running_loop().create_task(rec.apply("restart", 2.0))
    else:
        await rec.apply(fault)


async def mend(rec: Recorder, fault: str) -> None:
    if isinstance(rec, GstRecorder):
        if fault == "freeze":
            rec.resume()
        elif fault in ("kill", "close"):
            await rec.restart(0.0)
        return
    if fault != "restart":
        rec.clear()


def per_switch(r: ProbeResult, t_fault: float, t_end: float) -> dict[str, float]:
    pairs = [
        (t, c) for t, c in zip(r.arrivals, r.counters, strict=True) if t_fault - 0.2 <= t <= t_end
    ]
    if len(pairs) < 2:
        # The client got (almost) nothing in this window: the picture was gone for all of it.
        return {"gap_ms": (t_end - t_fault) * 1000, "lost": 0, "repeated": 0, "empty": 1}
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(pairs)]
    counters = [c for _, c in pairs if c is not None]
    lost = sum(b - a - 1 for a, b in itertools.pairwise(counters) if b > a + 1)
    repeated = sum(1 for a, b in itertools.pairwise(counters) if b <= a)
    return {"gap_ms": max(gaps) * 1000, "lost": lost, "repeated": repeated, "empty": 0}


async def series(
    fault: str, mode: str, switches: int, codec: str, settle: float = SETTLE
) -> dict[str, Any]:
    restream = mode == "restreamed"
    spec = SimSpec(
        recorders=[("camera", 0)] if restream else [("r1", 0), ("r2", 0)],
        cameras=["cam"],
        codec=codec,  # type: ignore[arg-type]
        seconds=4.0,
        # The sim recorders end a dead proxy's sessions fast; GStreamer's rtspsrc (the
        # re-streamers' client of the camera) keeps a 4 s session alive too late.
        session_timeout=60 if restream else 4,
        variants=["r2"] if mode == "different" else [],
    )
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(SimCluster(spec))
        recorders: dict[str, Recorder]
        if restream:
            gst = await stack.enter_async_context(
                restreamed(sim.url("camera", "cam"), codec)  # type: ignore[arg-type]
            )
            recorders = {"r1": gst["g1"], "r2": gst["g2"]}
            urls = {"r1": gst.url("g1"), "r2": gst.url("g2")}
        else:
            recorders = dict(sim.recorders)
            urls = {"r1": sim.url("r1", "cam"), "r2": sim.url("r2", "cam")}
        cfg = parse_config(
            {
                "rtsp": {"listen": "127.0.0.1:0"},
                "api": {"enabled": False},
                "log": {"format": "json", "level": "error"},
                "cameras": {
                    "cam": {
                        "failback_hold": 0.5,
                        "sources": [
                            {"url": urls["r1"], "name": "r1"},
                            {"url": urls["r2"], "name": "r2"},
                        ],
                    }
                },
            }
        )
        proxy = Proxy(cfg)
        await proxy.start()
        feed = proxy.feeds["cam"]
        try:
            while feed.active is None or not feed.start_points():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            stop = threading.Event()
            reader = asyncio.create_task(
                asyncio.to_thread(read_rtsp, proxy.url("cam"), seconds=86400.0, stop=stop)
            )
            await asyncio.sleep(1.0)
            windows = []
            back: list[tuple[float, float, bool]] = []
            for _ in range(switches):
                active = feed.source_name(feed.active) or "r1"
                rec = recorders[active]
                before = feed.switch_count
                t0 = time.monotonic()
                await break_(rec, fault)
                await asyncio.sleep(settle + (6.0 if fault == "stall" else 0.0))
                t1 = time.monotonic()
                windows.append((t0, t1, feed.switch_count > before))
                await mend(rec, fault)
                await asyncio.sleep(settle)
                # The next fault must hit one recorder while the other is a healthy
                # standby again (a broken recorder may take a request timeout to return).
                deadline = time.monotonic() + 30.0
                while time.monotonic() < deadline and not all(  # noqa: ASYNC110
                    s.healthy(feed.clock()) for s in feed.slots
                ):
                    await asyncio.sleep(0.1)
                # ... and after the failback to the primary (hold-down 0.5 s), measured too.
                deadline = time.monotonic() + 10.0
                while time.monotonic() < deadline and feed.active != 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                back.append((t1, time.monotonic(), feed.active == 0))
            await asyncio.sleep(1.0)
            ended_early = reader.done()  # the client's session ended before the series did
            stop.set()
            result = await reader
        finally:
            await proxy.stop()
    rows = [per_switch(result, t0, t1) for t0, t1, _ in windows]
    gaps = [r["gap_ms"] for r in rows]
    rows_back = [per_switch(result, t0, t1) for t0, t1, _ in back]
    gaps_back = [r["gap_ms"] for r in rows_back]
    return {
        "fault": fault,
        "mode": mode,
        "switches": switches,
        "switched": sum(1 for *_, ok in windows if ok),
        "gap_ms_p50": round(pct(gaps, 50), 1),
        "gap_ms_p99": round(pct(gaps, 99), 1),
        "gap_ms_max": round(max(gaps, default=float("nan")), 1),
        "frames_lost_total": sum(int(r["lost"]) for r in rows),
        "frames_lost_max": max((int(r["lost"]) for r in rows), default=0),
        "frames_repeated_total": sum(int(r["repeated"]) for r in rows),
        "failbacks": sum(1 for *_, ok in back if ok),
        "failback_gap_ms_p50": round(pct(gaps_back, 50), 1),
        "failback_gap_ms_p99": round(pct(gaps_back, 99), 1),
        "failback_gap_ms_max": round(max(gaps_back, default=float("nan")), 1),
        "failback_frames_lost_total": sum(int(r["lost"]) for r in rows_back),
        "failback_frames_repeated_total": sum(int(r["repeated"]) for r in rows_back),
        "windows_without_frames": sum(int(r["empty"]) for r in rows + rows_back),
        "decode_errors": result.decode_errors,
        "client_disconnects": 1 if (result.error is not None or ended_early) else 0,
        "client_error": result.error,
        "frames_decoded": result.frames_decoded,
        "client_read_seconds": round(result.arrivals[-1] - result.arrivals[0], 1)
        if result.arrivals
        else 0.0,
        "client_warnings": result.warnings[:5],
    }


async def main(args: argparse.Namespace) -> None:
    configure_logging("json", os.environ.get("BENCH_LOG", "error"))
    rows = []
    for fault in args.faults.split(","):
        for mode in args.modes.split(","):
            rows.append(await series(fault, mode, args.switches, args.codec, args.settle))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "benchmark": "switchover",
                "codec": args.codec,
                "switches_per_series": args.switches,
                "settle_seconds": args.settle,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switches", type=int, default=10)
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"of {FAULTS + EXTRA_FAULTS}")
    ap.add_argument(
        "--settle",
        type=float,
        default=SETTLE,
        help="seconds after a fault and after its repair (a differently encoded standby "
        "needs more than its GOP)",
    )
    ap.add_argument(
        "--modes", default="identical,different", help="of identical, different, restreamed"
    )
    ap.add_argument("--codec", default="h264", choices=["h264", "h265"])
    uvloop.run(main(ap.parse_args()))
