"""Builds and runs a set of simulated recorders (``rmfproxy sim``, the demo, tests, benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from rmfproxy.sim.camera import StreamStyle
from rmfproxy.sim.control import control_app
from rmfproxy.sim.encoder import EncodedClip, encode_clip
from rmfproxy.sim.recorder import SimRecorder


@dataclass
class SimSpec:
    """What to simulate: recorders, cameras and how the cameras are encoded."""

    recorders: list[tuple[str, int]] = field(default_factory=lambda: [("r1", 0), ("r2", 0)])
    cameras: list[str] = field(default_factory=lambda: ["lobby"])
    codec: Literal["h264", "h265"] = "h264"
    size: tuple[int, int] = (320, 240)
    fps: int = 25
    gop: int = 25
    bitrate: int = 500_000
    seconds: float = 4.0
    variants: list[str] = field(default_factory=list)
    """Recorders that serve a differently encoded copy of every camera."""
    payload_types: dict[str, int] = field(default_factory=dict)
    """Dynamic payload type per recorder (default 96), as real recorders choose their own."""
    session_timeout: int = 60
    """Session timeout the recorders announce (keepalive pace of their clients)."""
    serves: dict[str, list[str]] = field(default_factory=dict)
    """Cameras each recorder serves (a recorder not listed serves every camera)."""
    audio: bool = False
    """Cameras also carry a PCMU audio track (counter in each packet)."""
    styles: dict[str, StreamStyle] = field(default_factory=dict)
    """How each recorder re-streams (timestamps, parameter sets, AUD/SEI, MTU); default as is."""
    control: str = ""
    host: str = "127.0.0.1"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SimSpec:
        """From ``rmfproxy sim`` arguments."""
        return cls(
            recorders=args.recorder or [("r1", 8601), ("r2", 8602)],
            cameras=args.camera or ["lobby"],
            codec=args.codec,
            size=args.size,
            fps=args.fps,
            gop=args.gop,
            bitrate=args.bitrate,
            seconds=args.seconds,
            variants=args.variant,
            control=args.control,
        )


def encode_cameras(spec: SimSpec, variant: bool = False) -> dict[str, EncodedClip]:
    """Encode every camera once (the variant with another bitrate and GOP)."""
    w, h = spec.size
    return {
        cam: encode_clip(
            spec.codec,
            width=w,
            height=h,
            fps=spec.fps,
            gop=spec.gop * 2 if variant else spec.gop,
            bitrate=spec.bitrate * 3 // 2 if variant else spec.bitrate,
            seconds=spec.seconds,
            label=cam + ("-variant" if variant else ""),
        )
        for cam in spec.cameras
    }


class SimCluster:
    """Started recorders; use ``async with SimCluster(spec) as sim``."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        self.recorders: dict[str, SimRecorder] = {}
        self._control: web.AppRunner | None = None
        self.control_url: str | None = None

    async def start(self) -> None:
        """Encode (in a thread), start every recorder and the control API."""
        spec = self.spec
        clips = await asyncio.to_thread(encode_cameras, spec)
        variant = await asyncio.to_thread(encode_cameras, spec, True) if spec.variants else {}
        for i, (name, port) in enumerate(spec.recorders):
            pool = variant if name in spec.variants else clips
            wanted = spec.serves.get(name)
            served = {c: clip for c, clip in pool.items() if wanted is None or c in wanted}
            rec = SimRecorder(
                name,
                served,
                host=spec.host,
                port=port,
                seed=i,
                session_timeout=spec.session_timeout,
                payload_type=spec.payload_types.get(name, 96),
                audio=spec.audio,
                style=spec.styles.get(name),
            )
            await rec.start()
            self.recorders[name] = rec
        if spec.control:
            ctl_host, _, ctl_port = spec.control.rpartition(":")
            self._control = web.AppRunner(control_app(self.recorders), access_log=None)
            await self._control.setup()
            site = web.TCPSite(self._control, ctl_host, int(ctl_port))
            await site.start()
            # The bound port, also when asked for port 0.
            bound = self._control.addresses[0][1] if self._control.addresses else ctl_port
            self.control_url = f"http://{ctl_host}:{bound}"

    async def stop(self) -> None:
        """Stop the control API and every recorder."""
        if self._control is not None:
            await self._control.cleanup()
        for rec in self.recorders.values():
            await rec.stop()

    async def __aenter__(self) -> SimCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, recorder: str, camera: str) -> str:
        """The RTSP URL of ``camera`` on ``recorder``."""
        return self.recorders[recorder].url(camera)


async def run_sim(spec: SimSpec, stop: asyncio.Event, announce: Callable[[str], None]) -> None:
    """Run simulated recorders until ``stop`` is set."""
    async with SimCluster(spec) as sim:
        for name, rec in sim.recorders.items():
            for cam in rec.cameras:
                announce(f"{name}: {rec.url(cam)}")
        if sim.control_url:
            announce(
                f"fault control: {sim.control_url}  (rmfproxy fault --control "
                f"{sim.control_url.removeprefix('http://')} RECORDER FAULT [VALUE])"
            )
        await stop.wait()
