"""Builds and runs a set of simulated recorders (``rmfproxy sim``, the demo, tests, benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from aiohttp import web

from rmfproxy.sim.camera import StreamStyle
from rmfproxy.sim.control import control_app
from rmfproxy.sim.encoder import EncodedClip, encode_clip
from rmfproxy.sim.impair import Impairment
from rmfproxy.sim.recorder import SimRecorder
from rmfproxy.sim.wan import WanLink, impairment_from_args


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
    impairment: Impairment | None = None
    """A WAN path in front of each recorder (its own :class:`WanLink`, seed + i; stall
    phases, unless set, spread evenly over ``stall_every`` so no two links stall together).
    The recorders' URLs and ports are then the links'."""

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
            impairment=impairment_from_args(args, "wan-"),
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
        self.links: dict[str, WanLink] = {}
        """The WAN link in front of each recorder (with ``spec.impairment``)."""
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
        if spec.impairment is not None:
            epoch = asyncio.get_running_loop().time()
            n = len(spec.recorders)
            for i, name in enumerate(self.recorders):
                imp = spec.impairment
                phase = imp.stall_phase
                if phase is None and imp.stall_every is not None:
                    phase = imp.stall_every * (i + 0.5) / n
                link = WanLink(
                    spec.host,
                    self.recorders[name].port,
                    replace(imp, seed=imp.seed + i, stall_phase=phase),
                    listen_host=spec.host,
                    name=name,
                    epoch=epoch,
                )
                await link.start()
                self.links[name] = link
        if spec.control:
            ctl_host, _, ctl_port = spec.control.rpartition(":")
            self._control = web.AppRunner(
                control_app(self.recorders, {n: k.port for n, k in self.links.items()}),
                access_log=None,
            )
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
        for link in self.links.values():
            await link.aclose()
        for rec in self.recorders.values():
            await rec.stop()

    async def __aenter__(self) -> SimCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, recorder: str, camera: str) -> str:
        """The RTSP URL of ``camera`` on ``recorder`` (through its WAN link, if any)."""
        link = self.links.get(recorder)
        if link is not None:
            return f"rtsp://{link.host}:{link.port}/{camera}"
        return self.recorders[recorder].url(camera)

    def port(self, recorder: str) -> int:
        """The port clients reach ``recorder`` on (its WAN link's, if any)."""
        link = self.links.get(recorder)
        return link.port if link is not None else self.recorders[recorder].port


async def run_sim(spec: SimSpec, stop: asyncio.Event, announce: Callable[[str], None]) -> None:
    """Run simulated recorders until ``stop`` is set."""
    async with SimCluster(spec) as sim:
        for name, rec in sim.recorders.items():
            for cam in rec.cameras:
                announce(f"{name}: {sim.url(name, cam)}")
        for name, link in sim.links.items():
            announce(
                f"{name}: behind a WAN link to port {sim.recorders[name].port}: {link.impairment}"
            )
        if sim.control_url:
            announce(
                f"fault control: {sim.control_url}  (rmfproxy fault --control "
                f"{sim.control_url.removeprefix('http://')} RECORDER FAULT [VALUE])"
            )
        await stop.wait()
