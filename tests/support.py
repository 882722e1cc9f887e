"""Shared pieces of the end-to-end tests: a simulator plus a proxy on loopback, port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.sim.runner import SimCluster, SimSpec


@asynccontextmanager
async def relay(
    codec: Literal["h264", "h265"] = "h264",
    cameras: tuple[str, ...] = ("lobby",),
    rtsp: dict[str, Any] | None = None,
    camera: dict[str, Any] | None = None,
    api: dict[str, Any] | None = None,
    archive: dict[str, Any] | None = None,
    source_options: dict[str, dict[str, Any]] | None = None,
    **spec: Any,
) -> AsyncIterator[tuple[SimCluster, Proxy]]:
    """Two simulated recorders serving ``cameras`` and a proxy relaying them (r1 primary).

    ``archive`` is the config's ``archive`` section (e.g. ``{"journal": tmp_path / "j"}``);
    ``source_options``: more keys per source, by recorder (e.g. ``{"r2": {"standby": "warm"}}``).
    """
    more = source_options or {}
    sim_spec = SimSpec(recorders=[("r1", 0), ("r2", 0)], cameras=list(cameras), codec=codec, **spec)
    async with SimCluster(sim_spec) as sim:
        cfg = parse_config(
            {
                "rtsp": {"listen": "127.0.0.1:0", **(rtsp or {})},
                "api": {"listen": "127.0.0.1:0", **(api or {})},
                "archive": archive or {},
                "cameras": {
                    cam: {
                        "sources": [
                            {"url": sim.url("r1", cam), "name": "r1", **more.get("r1", {})},
                            {"url": sim.url("r2", cam), "name": "r2", **more.get("r2", {})},
                        ],
                        **(camera or {}),
                    }
                    for cam in cameras
                },
            }
        )
        proxy = Proxy(cfg)
        await proxy.start()
        try:
            await wait_ready(proxy, cameras)
            yield sim, proxy
        finally:
            await proxy.stop()


async def wait_ready(proxy: Proxy, cameras: tuple[str, ...], limit: float = 10.0) -> None:
    """Until every camera has an active source and has buffered a keyframe."""
    async with asyncio.timeout(limit):
        while not all(
            proxy.feeds[c].active is not None and proxy.feeds[c].start_points() for c in cameras
        ):
            await asyncio.sleep(0.05)


async def rtsp_exchange(
    port: int,
    request: bytes,
    reader_writer: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send one raw request, read one response: (status, headers lower-cased, body)."""
    if reader_writer is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    else:
        reader, writer = reader_writer
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    if reader_writer is None:
        writer.close()
        await writer.wait_closed()
    return status, headers, body


class LoopStalls:
    """The longest time the test's event loop (proxy and simulator) could not run.

    A picture gap on a loaded CI machine can come from the whole process being
    descheduled, not from the proxy: the gap assertions allow for what this measured,
    and say so. A gap the proxy's own logic made (waiting for detection, a keyframe)
    shows with no stall at all.
    """

    TICK = 0.01

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopStalls:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.TICK)
            self.longest = max(self.longest, loop.time() - t - self.TICK)


class FakeClock:
    """A monotonic clock that moves only when a test says so (inject it as ``clock=``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def until(check: Callable[[], object], limit: float = 5.0) -> None:
    """Wait (in short real-time steps) until ``check()`` is true: the server read what was
    sent. Fails after ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while not check():
            await asyncio.sleep(0.001)
