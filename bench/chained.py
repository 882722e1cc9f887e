"""Chained proxies: a central proxy pulling a site proxy that keeps switching (issue 11).

    .venv/bin/python bench/chained.py [--minutes 3] [--period 20] [--mode identical]
                                      [--out docs/bench/chained-DATE.json]

Simulated recorders r1 (primary) and r2 (the site's redundant recorder) serve one camera;
the site proxy A relays it from [r1, r2]; the central proxy B relays it from [A, r2]
(the site proxy first, the site's redundant recorder second). One FFmpeg client (PyAV)
reads B for the whole run. Every ``--period`` seconds A is made to switch, alternating
an operator switch (``POST /api/v1/cameras/{camera}/switch`` on A's admin API, pinning
the recorder A is not relaying) and a fault on the recorder A is relaying (cycling ``close``:
connections aborted, reconnects accepted; ``freeze``: RTP stops, TCP stays open;
``kill``: connections aborted and the RTSP port stops answering), mended after
``--fault-for`` seconds. With ``--site-outage`` (default 15 s) A itself is stopped once,
at two thirds of the run, and started again on the same port: B must fail over to r2
and fail back to A after its hold-down.

Reported (JSON on stdout, and to ``--out``): B's switches while A was up (must be 0),
B's switches around A's outage, A's switches by direction and cause, the longest
silence of A as B saw it (A's last RTP packet age, sampled every 10 ms) against B's
freeze budget, and from the client: decode errors, frames lost and repeated (the
simulator's frame counters), the picture gap around each of A's switches (p50/p99/max),
the gap around A's outage, and the whole run's longest gap. ``--mode different``: r2
serves another encoding (GOP twice as long) and B's freeze floor is set above that GOP
(docs/chained.md): frames are lost when A fails over to r2 (inherent), never repeated.
The simulator, both proxies and the client share this process (the client in a thread).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import uvloop

from bench.switchover import pct, per_switch
from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.log import configure_logging
from rmfproxy.relay.feed import Feed
from rmfproxy.sim.probe import read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec

CAMERA = "cam"
FPS = 25
GOP = 25
TOKEN_ENV = "RMF_BENCH_CHAIN_TOKEN"
SITE_HOLD = 2.0
CENTRAL_HOLD = 5.0
FAULTS = ("close", "freeze", "kill")
WINDOW = 4.0
"""Seconds after each event in which its picture gap is measured."""


def site_config(sim: SimCluster, port: int, token_env: str) -> dict[str, Any]:
    return {
        "rtsp": {"listen": f"127.0.0.1:{port}"},
        "api": {"listen": "127.0.0.1:0", "token_env": token_env},
        "log": {"format": "json", "level": "error"},
        "cameras": {
            CAMERA: {
                "failback_hold": SITE_HOLD,
                "sources": [
                    {"url": sim.url("r1", CAMERA), "name": "r1"},
                    {"url": sim.url("r2", CAMERA), "name": "r2"},
                ],
            }
        },
    }


def central_config(site_url: str, r2_url: str, stall: float) -> dict[str, Any]:
    return {
        "rtsp": {"listen": "127.0.0.1:0"},
        "api": {"enabled": False},
        "log": {"format": "json", "level": "error"},
        "cameras": {
            CAMERA: {
                "failback_hold": CENTRAL_HOLD,
                "stall_timeout": stall,
                "sources": [
                    {"url": site_url, "name": "site"},
                    {"url": r2_url, "name": "r2"},
                ],
            }
        },
    }


async def wait_active(feed: Feed, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while feed.active is None or not feed.start_points():
        if time.monotonic() > deadline:
            raise SystemExit(f"{feed.camera}: no active source after {limit} s")
        await asyncio.sleep(0.05)


class SilenceProbe:
    """The longest time B had nothing from A (A's last RTP packet age), while A was up."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.paused = False
        self.longest = 0.0
        self.overdue_samples = 0
        self.not_delivering: list[dict[str, Any]] = []
        """B's state while it sent its clients nothing for 2 s (at most 20 samples)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        feed = self.feed
        slot = feed.slots[0]
        last_note = 0.0
        while True:
            await asyncio.sleep(0.01)
            now = feed.clock()
            if not feed.delivering(now) and now - last_note > 0.5 and len(self.not_delivering) < 20:
                last_note = now
                merger = feed.merger
                self.not_delivering.append(
                    {
                        "at": round(time.time(), 3),
                        "active": feed.source_name(feed.active),
                        "pending": None if feed.pending is None else feed.pending.target,
                        "sources": {
                            s.name: {
                                "healthy": s.healthy(now),
                                "merge": s.merge_state.value,
                                "anchoring": merger.anchoring(s.index) if merger else None,
                                "aus": merger.stats(s.index) if merger else None,
                            }
                            for s in feed.slots
                        },
                    }
                )
            hb = slot.heartbeat
            if self.paused or hb.last_packet is None:
                continue
            self.longest = max(self.longest, now - hb.last_packet)
            if hb.overdue(now):
                self.overdue_samples += 1


async def run(args: argparse.Namespace) -> dict[str, Any]:
    token = os.urandom(16).hex()
    os.environ[TOKEN_ENV] = token
    auth = {"Authorization": f"Bearer {token}"}
    different = args.mode == "different"
    spec = SimSpec(
        recorders=[("r1", 0), ("r2", 0)],
        cameras=[CAMERA],
        codec=args.codec,
        fps=FPS,
        gop=GOP,
        # Longer than the merger's history of outbound pictures (256 at 25 fps): a looping
        # clip repeats its coded pictures, and a recorder that reconnects while the stream
        # carries the other encoding would match its pictures of a loop before.
        seconds=12.0,
        session_timeout=4,
        variants=["r2"] if different else [],
    )
    # A re-encoding r2 has a GOP of 2 s: A's failover to it leaves A silent until its next
    # keyframe, and B must wait for A rather than switch (docs/chained.md).
    stall = 2 * GOP / FPS + 0.5 if different else 0.15
    duration = args.minutes * 60.0
    async with SimCluster(spec) as sim, aiohttp.ClientSession() as http:
        site = Proxy(parse_config(site_config(sim, 0, TOKEN_ENV)))
        await site.start()
        site_port = site.server.port
        await wait_active(site.feeds[CAMERA])
        central = Proxy(
            parse_config(central_config(site.url(CAMERA), sim.url("r2", CAMERA), stall))
        )
        await central.start()
        cfeed = central.feeds[CAMERA]
        silence = SilenceProbe(cfeed)
        try:
            await wait_active(cfeed)
            silence.start()
            stop = threading.Event()
            reader = asyncio.create_task(
                asyncio.to_thread(read_rtsp, central.url(CAMERA), seconds=86400.0, stop=stop)
            )
            t0 = time.monotonic()
            events: list[dict[str, Any]] = []
            faults = itertools.cycle(FAULTS)
            outage_at = t0 + duration * 2 / 3 if args.site_outage > 0 else None
            outage: dict[str, Any] | None = None
            site_records: list[Any] = []
            k = 0
            while True:
                next_at = t0 + (k + 1) * args.period
                if outage_at is not None and outage is None and next_at > outage_at:
                    await asyncio.sleep(max(0.0, outage_at - time.monotonic()))
                    if events:
                        settle(events[-1])
                    outage = await site_outage(args, sim, cfeed, silence, site, site_port)
                    site_records += outage.pop("switches")
                    site = outage.pop("site")
                    k = math.ceil((time.monotonic() - t0) / args.period)  # events resume
                    continue
                if next_at > t0 + duration:
                    break
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if events:
                    settle(events[-1])
                k += 1
                sfeed = site.feeds[CAMERA]
                t_event = time.monotonic()
                check = {"feed": sfeed, "before": sfeed.switch_count}
                if k % 2:
                    target = "r1" if sfeed.active == 1 else "r2"  # the other recorder
                    url = site.api_url(f"/api/v1/cameras/{CAMERA}/switch")
                    async with http.post(url, json={"source": target}, headers=auth) as resp:
                        if resp.status != 202:
                            raise SystemExit(f"site switch: HTTP {resp.status}")
                    events.append({"t": t_event, "kind": "operator", "what": target, **check})
                else:
                    fault = next(faults)
                    victim = sfeed.source_name(sfeed.active) or "r1"
                    rec = sim.recorders[victim]
                    await rec.apply(fault)
                    events.append(
                        {"t": t_event, "kind": "fault", "what": f"{fault} {victim}", **check}
                    )
                    await asyncio.sleep(args.fault_for)
                    rec.clear()
            await asyncio.sleep(1.0)
            if events:
                settle(events[-1])
            ended_early = reader.done()
            stop.set()
            result = await reader
            site_switches = site_records + site.feeds[CAMERA].switches
        finally:
            await silence.stop()
            await central.stop()
            await site.stop()
            os.environ.pop(TOKEN_ENV, None)
    rows = [per_switch(result, e["t"], e["t"] + WINDOW) for e in events]
    gaps = [r["gap_ms"] for r in rows]
    out_start = outage["t_stop"] if outage else None
    out_end = outage["t_done_wall"] if outage else None
    while_up = [
        s
        for s in cfeed.switches
        if s.reason != "initial" and not (out_start and out_start <= s.at <= (out_end or 0))
    ]
    around = [s for s in cfeed.switches if s not in while_up and s.reason != "initial"]
    outage_row = per_switch(result, outage["t_mono"], outage["t_done"]) if outage else None
    arrivals = result.arrivals
    return {
        "benchmark": "chained",
        "mode": args.mode,
        "codec": args.codec,
        "minutes": args.minutes,
        "period_seconds": args.period,
        "central_freeze_floor_s": stall,
        "site_failback_hold_s": SITE_HOLD,
        "central_failback_hold_s": CENTRAL_HOLD,
        "site_events": len(events),
        "site_events_that_switched": sum(1 for e in events if e["site_switched"]),
        "site_switches": len([s for s in site_switches if s.reason != "initial"]),
        "site_switches_by_cause": count_by(site_switches),
        "central_switches_while_site_up": len(while_up),
        "central_switches_while_site_up_detail": [switch_json(s) for s in while_up],
        "central_switches_around_site_outage": [switch_json(s) for s in around],
        "site_silence_at_central_ms_max": round(silence.longest * 1000, 1),
        "central_overdue_samples_while_site_up": silence.overdue_samples,
        "central_not_delivering": silence.not_delivering,
        "client": {
            "frames_decoded": result.frames_decoded,
            "decode_errors": result.decode_errors,
            "frames_repeated": result.repeated(),
            "frames_lost": result.lost(),
            "site_switch_gap_ms_p50": round(pct(gaps, 50), 1),
            "site_switch_gap_ms_p99": round(pct(gaps, 99), 1),
            "site_switch_gap_ms_max": round(max(gaps, default=float("nan")), 1),
            "frames_lost_at_site_switches": sum(int(r["lost"]) for r in rows),
            "frames_repeated_at_site_switches": sum(int(r["repeated"]) for r in rows),
            "site_outage_central_failed_back": None
            if outage is None
            else outage["central_failed_back"],
            "site_outage_central_reconnect_s": None
            if outage is None
            else outage["central_reconnect_s"],
            "site_outage_gap_ms": None if outage_row is None else round(outage_row["gap_ms"], 1),
            "site_outage_frames_lost": None if outage_row is None else outage_row["lost"],
            "site_outage_frames_repeated": None if outage_row is None else outage_row["repeated"],
            "max_gap_ms": round(result.max_gap_seconds() * 1000, 1),
            "read_seconds": round(arrivals[-1] - arrivals[0], 1) if arrivals else 0.0,
            "disconnects": 1 if (result.error is not None or ended_early) else 0,
            "error": result.error,
            "warnings": result.warnings[:5],
        },
        "events": [
            {"kind": e["kind"], "what": e["what"], "site_switched": e["site_switched"], **r}
            for e, r in zip(events, rows, strict=True)
        ],
    }


async def site_outage(
    args: argparse.Namespace,
    sim: SimCluster,
    cfeed: Feed,
    silence: SilenceProbe,
    site: Proxy,
    port: int,
) -> dict[str, Any]:
    """Stop the site proxy, wait, start a new one on the same port; B's failback follows."""
    # B's second source must be back from the last fault first (a killed r2 takes a
    # reconnect): this measures A going away, not the whole site at once.
    deadline = time.monotonic() + 30.0
    while not all(s.healthy(cfeed.clock()) for s in cfeed.slots):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    silence.paused = True
    t_mono, t_stop = time.monotonic(), time.time()
    switches = list(site.feeds[CAMERA].switches)
    await site.stop()
    await asyncio.sleep(args.site_outage)
    new = Proxy(parse_config(site_config(sim, port, TOKEN_ENV)))
    await new.start()
    t_back = time.time()
    await wait_active(new.feeds[CAMERA])
    # B reconnects (its backoff grew while A was away) and fails back to A after its
    # hold-down; A's silence counts again from then on.
    deadline = time.monotonic() + CENTRAL_HOLD + 30.0
    while not cfeed.slots[0].healthy(cfeed.clock()) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    reconnected = time.time()
    while cfeed.active != 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    silence.paused = False
    return {
        "site": new,
        "switches": switches,
        "t_mono": t_mono,
        "t_done": time.monotonic(),
        "t_done_wall": time.time(),
        "t_stop": t_stop,
        "t_back": t_back,
        "central_failed_back": cfeed.active == 0,
        "central_reconnect_s": round(reconnected - t_back, 2),
    }


def settle(event: dict[str, Any]) -> None:
    """Whether the site proxy switched after the event (by the next one: a switch to another
    encoding waits for its keyframe)."""
    if "feed" in event:
        event["site_switched"] = event.pop("feed").switch_count > event.pop("before")


def count_by(switches: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in switches:
        if s.reason != "initial":
            key = f"{s.reason}/{s.cause}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def switch_json(s: Any) -> dict[str, Any]:
    return {
        "at": round(s.at, 3),
        "from": s.from_source,
        "to": s.to_source,
        "direction": s.reason,
        "cause": s.cause,
        "detection_ms": round(s.detection_s * 1000, 1),
        "gap_ms": round(s.gap_s * 1000, 1),
    }


def main(args: argparse.Namespace) -> None:
    configure_logging("json", os.environ.get("BENCH_LOG", "error"))
    report = uvloop.run(run(args))
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--period", type=float, default=20.0, help="seconds between A's switches")
    ap.add_argument("--fault-for", type=float, default=5.0, help="seconds before a fault is mended")
    ap.add_argument(
        "--site-outage",
        type=float,
        default=15.0,
        help="seconds the site proxy is stopped, once, at 2/3 of the run (0: never)",
    )
    ap.add_argument("--mode", default="identical", choices=["identical", "different"])
    ap.add_argument("--codec", default="h264", choices=["h264", "h265"])
    ap.add_argument("--out", default="", help="also write the JSON report here")
    main(ap.parse_args())
