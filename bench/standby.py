"""Standby benchmark: what a standby costs the WAN, and what it costs the client at a failover.

    .venv/bin/python bench/standby.py [--seconds 60] [--kills 10] [--rtt-ms 40]
        [--modes hot,warm-pause,warm-substream,cold,warm-pause-gst]

Per mode the primary (r1, hot) and the standby (r2, in the mode) serve one camera
(320x240, 25 fps, 1 s GOP, 500 kbit/s; the sub-stream of ``warm-substream`` is 160x120,
5 fps, 20 kbit/s, a second path on the same recorder). Every recorder sits behind a
delay pipe that adds ``--rtt-ms`` of round trip (half each way) as a WAN link would;
the proxy pulls over RTSP/TCP through it.

1. Standing by: for ``--seconds``, the WAN bytes per second of the standby and of the
   primary, from the proxy's per-source counters (every byte on the source's TCP
   connection: RTSP signalling, keepalives, interleaved RTP/RTCP), and the RTP packets
   the standby recorder sent (its own count). The issue's targets: warm <= 5 % of the
   primary, cold 0.
2. Failovers: ``--kills`` times the primary recorder is killed (connections aborted, new
   ones hang) while one FFmpeg client (PyAV) reads the proxy for the whole series; per
   kill the switch gap (longest interval between consecutive frames around the kill),
   frames lost and repeated (the simulator's frame counters), then the primary is mended
   and the bench waits for the failback and for the standby to stand by again.

``warm-pause-gst``: both recorders are GStreamer re-streamers (tests/peers/restream.py,
gst-rtsp-server: a PAUSE and PLAY implementation we did not write) of one simulated
camera; kill = SIGKILL, mended by a new process on the same port. Prints one JSON
document (medians and maxima per mode).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop

from bench.switchover import pct, per_switch
from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.log import configure_logging
from rmfproxy.relay.standby import State
from rmfproxy.sim.encoder import encode_clip
from rmfproxy.sim.probe import read_rtsp
from rmfproxy.sim.recorder import SimRecorder
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.peers.restream import GstRecorder, restreamed

MODES = ["hot", "warm-pause", "warm-substream", "cold", "warm-pause-gst"]
SETTLE = 2.5


class DelayPipe:
    """A TCP relay adding a fixed one-way delay per direction (a WAN round trip)."""

    def __init__(self, target: tuple[str, int], one_way: float) -> None:
        self.target = target
        self.one_way = one_way
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.transport.abort()
        for t in self._tasks:
            t.cancel()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        self._writers |= {cw, uw}
        for r, w in ((cr, uw), (ur, cw)):
            t = asyncio.create_task(self._pipe(r, w))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                w.write(data)
            w.transport.abort()  # the other side went: so does this one (a crash, not a FIN)

        sender = asyncio.create_task(send())
        try:
            while data := await r.read(65536):
                queue.put_nowait((time.monotonic() + self.one_way, data))
        except OSError:
            pass
        finally:
            queue.put_nowait((time.monotonic() + self.one_way, b""))
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender


@contextlib.asynccontextmanager
async def sim_recorders(fps: int, seconds: float) -> AsyncIterator[dict[str, SimRecorder]]:
    """r1 and r2 serving ``cam`` (and ``cam_sub``, its low-rate sub-stream)."""
    main, sub = await asyncio.gather(
        asyncio.to_thread(
            encode_clip, "h264", width=320, height=240, fps=fps, gop=fps, bitrate=500_000,
            seconds=seconds, label="cam",
        ),
        asyncio.to_thread(
            encode_clip, "h264", width=160, height=120, fps=5, gop=5, bitrate=20_000,
            seconds=seconds, label="sub",
        ),
    )  # fmt: skip
    recs = {
        name: SimRecorder(name, {"cam": main, "cam_sub": sub}, seed=i, session_timeout=60)
        for i, name in enumerate(("r1", "r2"))
    }
    for r in recs.values():
        await r.start()
    try:
        yield recs
    finally:
        for r in recs.values():
            await r.stop()


def recorder_packets(rec: SimRecorder | GstRecorder) -> int | None:
    if isinstance(rec, SimRecorder):
        return rec.cameras["cam"].fanout.client_packets()[0]
    return None


async def kill(rec: SimRecorder | GstRecorder) -> None:
    if isinstance(rec, SimRecorder):
        rec.kill()
    else:
        rec.kill()


async def mend(rec: SimRecorder | GstRecorder) -> None:
    if isinstance(rec, SimRecorder):
        rec.clear()
        rec.close_connections()  # drop the reconnect that hung while it was dead
    else:
        await rec.restart(0.0)


async def series(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        recorders: dict[str, SimRecorder | GstRecorder]
        if mode.endswith("-gst"):
            sim = await stack.enter_async_context(
                SimCluster(SimSpec(recorders=[("camera", 0)], cameras=["cam"], seconds=12.0))
            )
            gst = await stack.enter_async_context(restreamed(sim.url("camera", "cam"), "h264"))
            recorders = {"r1": gst["g1"], "r2": gst["g2"]}
            targets = {n: ("127.0.0.1", r.port) for n, r in recorders.items()}
            paths = {"main": "/cam", "sub": None}
        else:
            # Clips longer than the merger's history (256 AUs): a looping clip repeats its
            # pictures, and a promoted source ahead of the stream would be matched to the
            # previous loop's copies (see the report of 2026-11-26).
            sims = await stack.enter_async_context(sim_recorders(25, 12.0))
            recorders = dict(sims)
            targets = {n: ("127.0.0.1", r.port) for n, r in sims.items()}
            paths = {"main": "/cam", "sub": "/cam_sub"}
        pipes = {}
        for name, target in targets.items():
            pipe = DelayPipe(target, args.rtt_ms / 2000)
            await pipe.start()
            stack.push_async_callback(pipe.stop)
            pipes[name] = pipe
        standby: dict[str, Any] = {"standby": mode.split("-")[0]}
        if mode == "warm-substream":
            standby["standby_url"] = f"rtsp://127.0.0.1:{pipes['r2'].port}{paths['sub']}"
        cfg = parse_config(
            {
                "rtsp": {"listen": "127.0.0.1:0"},
                "api": {"enabled": False},
                "log": {"format": "json", "level": "error"},
                "cameras": {
                    "cam": {
                        "failback_hold": 1.0,
                        "sources": [
                            {"url": f"rtsp://127.0.0.1:{pipes['r1'].port}/cam", "name": "r1"},
                            {
                                "url": f"rtsp://127.0.0.1:{pipes['r2'].port}/cam",
                                "name": "r2",
                                **standby,
                            },
                        ],
                    }
                },
            }
        )
        proxy = Proxy(cfg)
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        feed = proxy.feeds["cam"]
        p, s = feed.slots
        while feed.active != 0 or not feed.start_points():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        # 1. standing by
        t0 = time.monotonic()
        b0 = (p.wan_received, p.wan_sent, s.wan_received, s.wan_sent)
        k0 = recorder_packets(recorders["r2"])
        states: dict[str, int] = {}
        while time.monotonic() - t0 < args.seconds:
            await asyncio.sleep(0.5)
            states[s.standby_state.value] = states.get(s.standby_state.value, 0) + 1
        dt = time.monotonic() - t0
        b1 = (p.wan_received, p.wan_sent, s.wan_received, s.wan_sent)
        k1 = recorder_packets(recorders["r2"])
        rates = [(b - a) / dt for a, b in zip(b0, b1, strict=True)]
        primary_bps = rates[0] + rates[1]
        standby_bps = rates[2] + rates[3]
        # 2. failovers, read by FFmpeg
        stop = threading.Event()
        reader = asyncio.create_task(
            asyncio.to_thread(read_rtsp, proxy.url("cam"), seconds=86400.0, stop=stop)
        )
        await asyncio.sleep(1.5)
        windows = []
        back_to_standby: list[float] = []
        for _ in range(args.kills):
            before = feed.switch_count
            t_kill = time.monotonic()
            await kill(recorders["r1"])
            await asyncio.sleep(args.settle)
            windows.append((t_kill, time.monotonic(), feed.switch_count > before))
            await mend(recorders["r1"])
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline and not (  # noqa: ASYNC110
                feed.active == 0 and s.standby_state is not State.FLOWING
                if s.standby.on_demand
                else feed.active == 0 and s.healthy(feed.clock())
            ):
                await asyncio.sleep(0.05)
            back_to_standby.append(time.monotonic() - windows[-1][1])
            await asyncio.sleep(1.0)
        stop.set()
        result = await reader
    rows = [per_switch(result, a, b) for a, b, _ in windows]
    gaps = [r["gap_ms"] for r in rows]
    return {
        "mode": mode,
        "rtt_ms": args.rtt_ms,
        "standing_by_seconds": round(dt, 1),
        "primary_wan_bytes_per_s": round(primary_bps),
        "standby_wan_bytes_per_s": round(standby_bps, 1),
        "standby_wan_received_bytes_per_s": round(rates[2], 1),
        "standby_wan_sent_bytes_per_s": round(rates[3], 1),
        "standby_vs_primary_percent": round(100 * standby_bps / primary_bps, 3)
        if primary_bps
        else None,
        "standby_recorder_rtp_packets": None if k0 is None or k1 is None else k1 - k0,
        "standby_states_sampled": states,
        "kills": args.kills,
        "switched": sum(1 for *_, ok in windows if ok),
        "gap_ms_p50": round(statistics.median(gaps), 1) if gaps else None,
        "gap_ms_p90": round(pct(gaps, 90), 1) if gaps else None,
        "gap_ms_max": round(max(gaps), 1) if gaps else None,
        "gaps_ms": [round(g, 1) for g in gaps],
        "lost_per_kill": [int(r["lost"]) for r in rows],
        "repeated_per_kill": [int(r["repeated"]) for r in rows],
        "frames_lost_total": sum(int(r["lost"]) for r in rows),
        "frames_repeated_total": sum(int(r["repeated"]) for r in rows),
        "decode_errors": result.decode_errors,
        "client_error": result.error,
        "frames_decoded": result.frames_decoded,
        "standby_again_s_p50": round(statistics.median(back_to_standby), 2)
        if back_to_standby
        else None,
        "promotions": s.standby.promotions,
        "client_warnings": result.warnings[:3],
    }


async def main(args: argparse.Namespace) -> None:
    configure_logging("json", os.environ.get("BENCH_LOG", "error"))
    rows = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        rows.append(await series(mode, args))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "benchmark": "standby",
                "seconds": args.seconds,
                "kills": args.kills,
                "rtt_ms": args.rtt_ms,
                "settle_seconds": args.settle,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="standing-by measurement")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--rtt-ms", type=float, default=40.0, help="round trip added to the WAN")
    ap.add_argument("--settle", type=float, default=SETTLE, help="seconds after each kill")
    ap.add_argument("--modes", default=",".join(MODES[:4]), help=f"of {', '.join(MODES)}")
    uvloop.run(main(ap.parse_args()))
