"""Two GStreamer re-streaming recorders of one camera, for tests and benchmarks.

``restreamed(upstream_url, codec)`` starts two ``gst_restream.py`` processes
(Debian's /usr/bin/python3 with GObject bindings) that pull the same upstream
camera and re-serve it as two real recorders would: each with its own
arrival-derived timestamps (jitter, drift), parameter-set schedule, AUD/SEI
and packetization. It yields a :class:`Restreamers` with their URLs and the
faults a test needs: :meth:`GstRecorder.kill` (a crash: the process dies),
:meth:`GstRecorder.freeze` (SIGSTOP: TCP stays open, nothing flows, nothing
answers) and :meth:`GstRecorder.restart` (a new process on the same port).
Every process is stopped on exit, also when the test fails.

Runs in the project's venv; starts the peers with /usr/bin/python3. Imports
nothing of rmfproxy: it only needs the upstream's URL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PEER = Path(__file__).with_name("gst_restream.py")
SYSTEM_PYTHON = "/usr/bin/python3"

Codec = Literal["h264", "h265"]


@dataclass(frozen=True)
class RecorderSettings:
    """How one re-streaming recorder differs from another (``gst_restream.py`` options)."""

    name: str
    jitter_ms: float = 0.0
    """Random extra delay (and so timestamp shift) per access unit, 0..jitter_ms."""
    drift_ppm: float = 0.0
    """Timestamp clock error: timestamps scaled by 1 + drift_ppm / 1e6."""
    config_interval: int = -1
    """Parameter sets: -1 before every keyframe, N > 0 every N s before any unit, 0 SDP only."""
    mtu: int = 1400
    aggregate: Literal["none", "zero-latency", "max"] = "zero-latency"
    aud: bool = False
    sei: bool = False
    seed: int | None = None

    def argv(self) -> list[str]:
        """Command-line options for ``gst_restream.py``."""
        out = [
            "--name",
            self.name,
            "--jitter-ms",
            str(self.jitter_ms),
            "--drift-ppm",
            str(self.drift_ppm),
            "--config-interval",
            str(self.config_interval),
            "--mtu",
            str(self.mtu),
            "--aggregate",
            self.aggregate,
        ]
        if self.aud:
            out.append("--aud")
        if self.sei:
            out.append("--sei")
        if self.seed is not None:
            out += ["--seed", str(self.seed)]
        return out


# Two recorders of one camera that disagree on everything but the slices.
DEFAULT_PAIR = (
    RecorderSettings(
        "g1", jitter_ms=10, drift_ppm=60, config_interval=-1, mtu=1400, sei=True, seed=1
    ),
    RecorderSettings(
        "g2",
        jitter_ms=25,
        drift_ppm=-90,
        config_interval=2,
        mtu=1000,
        aggregate="none",
        aud=True,
        seed=2,
    ),
)


class PeerUnavailable(RuntimeError):
    """The GStreamer peer cannot run here (no /usr/bin/python3 with gi, no plugins)."""


class GstRecorder:
    """One ``gst_restream.py`` process serving one camera path."""

    def __init__(
        self, settings: RecorderSettings, upstream_url: str, codec: Codec, path: str
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.upstream_url = upstream_url
        self.codec = codec
        self.path = path if path.startswith("/") else "/" + path
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.frozen = False
        self.stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._drain: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The camera's RTSP URL on this recorder."""
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    async def start(self, port: int = 0, startup: float = 15.0) -> None:
        """Start the process (on ``port``, 0 = any) and wait for its ``PORT`` line."""
        if not os.access(SYSTEM_PYTHON, os.X_OK):
            raise PeerUnavailable(f"{SYSTEM_PYTHON} is not there")
        self.proc = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON,
            str(PEER),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--codec",
            self.codec,
            "--restream",
            f"{self.path}={self.upstream_url}",
            *self.settings.argv(),
            # EOF on stdin ends the peer: it dies with us even if we are killed.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.frozen = False
        self._drain = asyncio.create_task(self._drain_stderr(self.proc))
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), startup)
        except TimeoutError:
            line = b""
        if not line.startswith(b"PORT "):
            await self.stop()
            raise PeerUnavailable(
                f"gst_restream {self.name} did not start: {line!r} {list(self.stderr)[-5:]}"
            )
        self.port = int(line.split()[1])

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            self.stderr.append(line.decode(errors="replace").rstrip())

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        """A crash: SIGKILL; every connection is reset and the port stops answering."""
        self._signal(signal.SIGKILL)

    def freeze(self) -> None:
        """A silent freeze: SIGSTOP; connections stay open, nothing flows or answers."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def resume(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        self._signal(signal.SIGCONT)
        self.frozen = False

    async def restart(self, down_seconds: float = 0.0) -> None:
        """Kill the process, wait ``down_seconds``, start a new one on the same port."""
        port = self.port
        self.kill()
        await self.stop()
        await asyncio.sleep(down_seconds)
        await self.start(port)

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (after SIGCONT if frozen), then SIGKILL after ``grace`` seconds."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._drain, 2.0)
        self.frozen = False


class Restreamers:
    """The started recorders, by name, in the order given."""

    def __init__(self, recorders: list[GstRecorder]) -> None:
        self.recorders = {r.name: r for r in recorders}

    def __getitem__(self, name: str) -> GstRecorder:
        return self.recorders[name]

    def url(self, name: str) -> str:
        """The camera's URL on recorder ``name``."""
        return self.recorders[name].url

    @property
    def urls(self) -> dict[str, str]:
        """Every recorder's URL of the camera, by name."""
        return {n: r.url for n, r in self.recorders.items()}

    async def stop(self) -> None:
        """Stop every process (concurrently)."""
        await asyncio.gather(*(r.stop() for r in self.recorders.values()))


@contextlib.asynccontextmanager
async def restreamed(
    upstream_url: str,
    codec: Codec = "h264",
    settings: tuple[RecorderSettings, ...] = DEFAULT_PAIR,
    path: str = "/cam",
) -> AsyncIterator[Restreamers]:
    """GStreamer recorders re-streaming ``upstream_url`` (one per ``settings``) at ``path``."""
    recorders = [GstRecorder(s, upstream_url, codec, path) for s in settings]
    group = Restreamers(recorders)
    try:
        await asyncio.gather(*(r.start() for r in recorders))
        yield group
    finally:
        await group.stop()


@dataclass(frozen=True)
class RtpPacket:
    """One received RTP packet (as aiortsp/dpkt parsed it) and when it came."""

    seq: int
    timestamp: int
    marker: bool
    payload: bytes
    arrival: float


async def capture_rtp(url: str, seconds: float, open_timeout: float = 10.0) -> list[RtpPacket]:
    """RTP packets of ``url``'s first track for ``seconds``, read with aiortsp (TCP)."""
    from aiortsp.rtsp.reader import RTSPReader

    out: list[RtpPacket] = []
    deadline = time.monotonic() + seconds
    # aiortsp picks RTP over RTSP/TCP for the rtspt:// scheme (rtsp:// would bind UDP ports).
    tcp_url = "rtspt://" + url.removeprefix("rtsp://")
    async with RTSPReader(tcp_url, timeout=open_timeout, run_loop=False) as reader:
        # aiortsp cancels its runner on exit without awaiting it; its TEARDOWN may then fail
        # (the recorder was killed): retrieve that result so nothing is logged as unretrieved.
        runner = reader._runner
        if runner is not None:
            runner.add_done_callback(lambda t: t.cancelled() or t.exception())
        async for pkt in reader.iter_packets():
            out.append(RtpPacket(pkt.seq, pkt.ts, bool(pkt.m), bytes(pkt.data), time.monotonic()))
            if time.monotonic() > deadline:
                break
    return out
