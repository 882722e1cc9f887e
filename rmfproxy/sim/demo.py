"""``rmfproxy demo``: simulated recorders, the proxy in front of them, and what to watch."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Literal

from rmfproxy.config import parse_config
from rmfproxy.relay.proxy import Proxy
from rmfproxy.sim.runner import SimCluster, SimSpec

CAMERAS = ["lobby", "gate"]


async def run_demo(
    stop: asyncio.Event,
    *,
    port: int = 8554,
    size: tuple[int, int] = (640, 360),
    codec: Literal["h264", "h265"] = "h264",
) -> None:
    """Run until ``stop``: two simulated recorders, the proxy, a status line per camera."""
    print("encoding the simulated cameras ...", flush=True)
    spec = SimSpec(
        recorders=[("primary", 0), ("redundant", 0)],
        cameras=CAMERAS,
        codec=codec,
        size=size,
        bitrate=1_500_000,
        seconds=8.0,
    )
    async with SimCluster(spec) as sim:
        cfg = parse_config(
            {
                "rtsp": {"listen": f"127.0.0.1:{port}"},
                "log": {"format": "console", "level": "warning"},
                "cameras": {
                    cam: {
                        "sources": [
                            {"url": sim.url("primary", cam), "name": "primary"},
                            {"url": sim.url("redundant", cam), "name": "redundant"},
                        ]
                    }
                    for cam in CAMERAS
                },
            }
        )
        proxy = Proxy(cfg)
        await proxy.start()
        try:
            print("\nrmfproxy demo is running. Watch a camera with:")
            for cam in CAMERAS:
                print(f"  ffplay -rtsp_transport tcp {proxy.url(cam)}")
            print(f"  (or open {proxy.url(CAMERAS[0])} in VLC).  Ctrl-C stops.\n", flush=True)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                line = "  ".join(
                    f"{cam}: active={_active(proxy, cam)} clients={proxy.feeds[cam].clients}"
                    for cam in CAMERAS
                )
                sys.stdout.write(f"\r{time.strftime('%H:%M:%S')}  {line}   ")
                sys.stdout.flush()
        finally:
            print("\nstopping ...", flush=True)
            await proxy.stop()


def _active(proxy: Proxy, cam: str) -> str:
    feed = proxy.feeds[cam]
    return feed.slots[feed.active].name if feed.active is not None else "none"
