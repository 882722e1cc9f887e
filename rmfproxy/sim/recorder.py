"""A simulated recorder: an RTSP server (the project's own) serving simulated cameras,
with faults injectable at run time.

Faults: ``close`` (abort every TCP connection), ``freeze`` (RTP stops, TCP
stays open), ``stall`` (stop answering RTSP requests), ``delay``/``jitter``,
``drop`` and ``corrupt`` (fractions of RTP packets), ``restart`` (go away
for a while, then listen again on the same port).

A :class:`~rmfproxy.sim.camera.StreamStyle` makes the recorder re-stream its
cameras as a real recorder would (own timestamps, parameter-set schedule,
AUD/SEI, MTU): fixed for the recorder's life, unlike the faults.

Every recorder records what it serves (:mod:`rmfproxy.sim.archive`; nothing while
frozen, killed or restarting) and replays it to clients that send
``Require: onvif-replay`` (:mod:`rmfproxy.sim.replay`).
"""

from __future__ import annotations

import asyncio
import random

import structlog

from rmfproxy.serve.server import RtspServer
from rmfproxy.sim.archive import RecorderArchive
from rmfproxy.sim.camera import Faults, SimCamera, StreamStyle
from rmfproxy.sim.encoder import EncodedClip
from rmfproxy.sim.replay import SimReplayProvider
from rmfproxy.tls import ServerTls

log = structlog.get_logger(__name__)

REPLAY_PREFIX = "replay/"
"""``rtsp://recorder/replay/<camera>`` replays without Require (see RtspServer.replay_prefix)."""

FAULTS = (
    "kill",
    "close",
    "freeze",
    "unfreeze",
    "stall",
    "unstall",
    "delay",
    "drop",
    "corrupt",
    "restart",
    "clear",
)


class SimRecorder:
    """N simulated cameras behind one RTSP listener."""

    def __init__(
        self,
        name: str,
        clips: dict[str, EncodedClip],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        session_timeout: int = 60,
        seed: int | None = None,
        payload_type: int = 96,
        audio: bool = False,
        style: StreamStyle | None = None,
        retention: float = 600.0,
        tls: ServerTls | None = None,
    ) -> None:
        self.name = name
        self.archive = RecorderArchive(retention=retention)
        """What this recorder recorded of each camera (replayed with ``Require: onvif-replay``)."""
        self.style = style or StreamStyle()
        self.faults = Faults()
        rng = random.Random(seed)
        self.cameras = {
            path: SimCamera(
                path,
                clip,
                self.faults,
                rng=random.Random(rng.getrandbits(64)),
                payload_type=payload_type,
                audio=audio,
                style=self.style,
                recorder=name,
                archive=self.archive.camera(path, clip.fps),
            )
            for path, clip in clips.items()
        }
        self.server = RtspServer(
            self.cameras.get,
            host=host,
            port=port,
            session_timeout=session_timeout,
            name=f"sim-{name}",
            replay=SimReplayProvider(self.cameras, self.archive, seed=rng.getrandbits(64)),
            replay_prefix=REPLAY_PREFIX,
            tls=tls,
        )
        self._restart_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The TCP port the recorder listens on."""
        return self.server.port

    def url(self, path: str) -> str:
        """The RTSP URL of one camera on this recorder."""
        return self.server.url(path)

    async def start(self) -> None:
        """Listen and start every camera's frame loop."""
        await self.server.start()
        self.server.requested_port = self.server.port  # a restart comes back on the same port
        for cam in self.cameras.values():
            cam.start()

    async def stop(self) -> None:
        """Stop everything."""
        if self._restart_task is not None:
            self._restart_task.cancel()
        for cam in self.cameras.values():
            await cam.stop()
        await self.server.close()

    # faults ------------------------------------------------------------------

    def close_connections(self) -> None:
        """Abort every client's TCP connection (a recorder crash as clients see it)."""
        log.info("sim.fault", recorder=self.name, fault="close")
        self.server.close_connections()

    def kill(self) -> None:
        """A crash as clients see it: connections abort, media stops, and new sessions
        hang (the RTSP port does not answer) until :meth:`clear`."""
        self.stall_rtsp()
        self.freeze()
        self.close_connections()

    def freeze(self, on: bool = True) -> None:
        """Stop (or resume) RTP while keeping every connection open."""
        log.info("sim.fault", recorder=self.name, fault="freeze" if on else "unfreeze")
        self.faults.frozen = on

    def stall_rtsp(self, on: bool = True) -> None:
        """Stop (or resume) answering RTSP requests; media keeps flowing."""
        log.info("sim.fault", recorder=self.name, fault="stall" if on else "unstall")
        self.server.fault_stall_rtsp = on

    def pause_quirk(self, quirk: str) -> None:
        """Behave as a recorder without live PAUSE: ``refuse`` (501) or ``ignore`` it (200,
        media goes on); ``""``: honour it (media stops until PLAY)."""
        if quirk not in ("", "refuse", "ignore"):
            raise ValueError(f"unknown PAUSE quirk {quirk!r}; known: refuse, ignore")
        self.server.fault_pause = quirk

    def set_delay(self, delay: float, jitter: float = 0.0) -> None:
        """Delay every frame by ``delay`` plus up to ``jitter`` seconds."""
        self.faults.delay, self.faults.jitter = delay, jitter

    def set_drop(self, fraction: float) -> None:
        """Drop this fraction of RTP packets."""
        self.faults.drop = fraction

    def set_corrupt(self, fraction: float) -> None:
        """Scramble the payload of this fraction of RTP packets."""
        self.faults.corrupt = fraction

    def clear(self) -> None:
        """Remove every fault."""
        self.faults.frozen = False
        self.faults.drop = self.faults.corrupt = self.faults.delay = self.faults.jitter = 0.0
        self.server.fault_stall_rtsp = False

    async def restart(self, down_seconds: float = 1.0) -> None:
        """Go away (close the listener and every connection), then come back on the same port."""
        log.info("sim.fault", recorder=self.name, fault="restart", down=down_seconds)
        port = self.server.port
        self.archive.pause()  # a recorder that is down records nothing: a real gap
        try:
            await self.server.close()
            await asyncio.sleep(down_seconds)
            self.server.requested_port = port
            await self.server.start()
        finally:
            self.archive.pause(False)

    async def apply(self, fault: str, value: float = 0.0) -> None:
        """Apply a fault by name (the command line and control API use this)."""
        if fault == "kill":
            self.kill()
        elif fault == "close":
            self.close_connections()
        elif fault in ("freeze", "unfreeze"):
            self.freeze(fault == "freeze")
        elif fault in ("stall", "unstall"):
            self.stall_rtsp(fault == "stall")
        elif fault == "delay":
            self.set_delay(value)
        elif fault == "drop":
            self.set_drop(value)
        elif fault == "corrupt":
            self.set_corrupt(value)
        elif fault == "restart":
            await self.restart(value or 1.0)
        elif fault == "clear":
            self.clear()
        else:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
