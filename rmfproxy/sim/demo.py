"""``rmfproxy demo``: the M→N shape with scripted faults and a live view.

Two primary recorders each serve two cameras; one redundant recorder serves
all four (dual recording). The proxy pulls every camera from its primary and
from the redundant recorder at once. Every ~20 s a scripted fault hits a
recorder (kill, freeze, restart, then recovery and failback), and the
terminal shows each camera's active source, the health of each source and
the last switch with its gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.relay.feed import Feed
from rmfproxy.sim.runner import SimCluster, SimSpec

LAYOUT = {"primary-a": ["lobby", "gate"], "primary-b": ["dock", "yard"]}
REDUNDANT = "redundant"

# (seconds after the previous step, recorder, fault, what the viewer should see)
SCRIPT = [
    (20, "primary-a", "kill", "primary-a crashes: lobby and gate continue from the redundant"),
    (10, "primary-a", "recover", "primary-a is back: failback after the 5 s hold-down"),
    (20, "primary-b", "freeze", "primary-b freezes silently: dock and yard switch"),
    (10, "primary-b", "unfreeze", "primary-b flows again: failback after the hold-down"),
    (20, "primary-a", "restart", "primary-a restarts (down 3 s)"),
]


async def _fault(sim: SimCluster, recorder: str, fault: str) -> None:
    rec = sim.recorders[recorder]
    if fault == "recover":
        rec.clear()
    else:
        await rec.apply(fault, 3.0 if fault == "restart" else 0.0)


async def _script(sim: SimCluster, events: list[str]) -> None:
    while True:
        for delay, recorder, fault, text in SCRIPT:
            await asyncio.sleep(delay)
            events.append(f"{time.strftime('%H:%M:%S')}  {text}")
            await _fault(sim, recorder, fault)


def _camera_line(cam: str, feed: Feed, now: float) -> str:
    health = "  ".join(f"{s.name}:{'up' if s.healthy(now) else 'DOWN'}" for s in feed.slots)
    active = feed.source_name(feed.active) or "none"
    last = feed.switches[-1] if feed.switches else None
    sw = (
        f"last switch {last.reason} {last.from_source}->{last.to_source} "
        f"gap {last.gap_s * 1000:.0f} ms"
        if last and last.from_source
        else "no switch yet"
    )
    return f"  {cam:<6} active={active:<10} [{health}]  {sw}  clients={feed.clients}"


@contextlib.asynccontextmanager
async def demo_proxy(
    *,
    port: int = 8554,
    api_port: int = 9100,
    size: tuple[int, int] = (640, 360),
    codec: Literal["h264", "h265"] = "h264",
    log_format: Literal["json", "console", "auto"] = "console",
) -> AsyncIterator[tuple[SimCluster, Proxy]]:
    """The demo's recorders and a started proxy in front of them (no faults, no view)."""
    cameras = [c for cams in LAYOUT.values() for c in cams]
    spec = SimSpec(
        recorders=[("primary-a", 0), ("primary-b", 0), (REDUNDANT, 0)],
        cameras=cameras,
        codec=codec,
        size=size,
        bitrate=1_500_000,
        seconds=8.0,
        serves={**LAYOUT, REDUNDANT: cameras},
    )
    with tempfile.TemporaryDirectory(prefix="rmfproxy-demo-") as tmp:
        async with _cluster(spec, port, api_port, log_format, Path(tmp)) as pair:
            yield pair


@contextlib.asynccontextmanager
async def _cluster(
    spec: SimSpec, port: int, api_port: int, log_format: str, tmp: Path
) -> AsyncIterator[tuple[SimCluster, Proxy]]:
    async with SimCluster(spec) as sim:
        cfg = parse_config(
            {
                "rtsp": {"listen": f"127.0.0.1:{port}"},
                "api": {"listen": f"127.0.0.1:{api_port}"},
                # Which recorder covered which minutes: the status page draws it.
                "archive": {"journal": str(tmp / "coverage.sqlite")},
                "log": {"format": log_format, "level": "warning"},
                "cameras": {
                    cam: {
                        "failback_hold": 5.0,
                        "sources": [
                            {"url": sim.url(primary, cam), "name": primary},
                            {"url": sim.url(REDUNDANT, cam), "name": REDUNDANT},
                        ],
                    }
                    for primary, cams in LAYOUT.items()
                    for cam in cams
                },
            }
        )
        proxy = Proxy(cfg)
        await proxy.start()
        try:
            yield sim, proxy
        finally:
            await proxy.stop()


async def run_demo(
    stop: asyncio.Event,
    *,
    port: int = 8554,
    api_port: int = 9100,
    size: tuple[int, int] = (640, 360),
    codec: Literal["h264", "h265"] = "h264",
    log_path: Path | None = None,
) -> None:
    """Run until ``stop`` (warnings go to ``log_path`` when given: the header says so)."""
    cameras = [c for cams in LAYOUT.values() for c in cams]
    print("encoding the simulated cameras ...", flush=True)
    async with demo_proxy(port=port, api_port=api_port, size=size, codec=codec) as (sim, proxy):
        events: list[str] = []
        script = asyncio.create_task(_script(sim, events))
        tty = sys.stdout.isatty()
        try:
            header = [
                "rmfproxy demo: 2 primary recorders + 1 redundant covering both (M→N)",
                "Watch a camera (it keeps playing through every fault):",
            ]
            header += [f"  ffplay -rtsp_transport tcp {proxy.url(c)}" for c in cameras]
            header.append(f"  (or open {proxy.url(cameras[0])} in VLC).")
            header.append(
                f"Status page: {proxy.api_url('/')}   metrics: {proxy.api_url('/metrics')}"
            )
            if log_path is not None:
                header.append(f"Proxy warnings and errors: tail -f {log_path}")
            header.append("Ctrl-C stops.")
            if not tty:
                print("\n".join(header), flush=True)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5 if tty else 5.0)
                now = proxy.feeds[cameras[0]].clock()
                lines = [_camera_line(c, proxy.feeds[c], now) for c in cameras]
                if tty:
                    body = "\n".join([*header, "", *lines, "", "events:", *events[-6:]])
                    sys.stdout.write("\x1b[H\x1b[2J" + body + "\n")
                else:
                    print(time.strftime("%H:%M:%S"), *lines, sep="\n")
                    while events:
                        print("event:", events.pop(0))
                sys.stdout.flush()
        finally:
            print("\nstopping ...", flush=True)
            script.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await script
