"""End to end: a central proxy pulling a site proxy (issue 11, chained proxies).

Simulated recorders r1 (primary) and r2 (redundant) serve one camera; the site proxy A
relays it from [r1, r2]; the central proxy B relays it from [A, r2]. During one read of B
by FFmpeg (PyAV), A is made to switch back and forth (operator switches through its API,
then real faults on r1: connections closed, RTP frozen); then A itself is stopped and
started again. With identical recorders, A's own switches must stay invisible behind B:
no decode error, no frame lost or repeated, and no switch at B while A is up. When A goes,
B goes on from r2 (nothing repeated, a bounded gap); when A is back, B fails back after
its hold-down, cleanly.

With a re-encoding r2, a switch inside A to or from r2 restarts A's output at a keyframe
of the other encoding; B (whose r2 is then the faster copy of what A sends) must follow
without repeating a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.sim.probe import ProbeResult, read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.support import LoopStalls, wait_ready
from tests.test_e2e_restreamed import ToolResult, ffmpeg_client, lost, repeated

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

CAMERA = "lobby"
FPS = 25
GOP = 25
TOKEN_ENV = "RMF_TEST_CHAIN_TOKEN"
TOKEN = "chain-token-for-tests-0123456789"
SITE_HOLD = 0.5
"""Site proxy A's failback hold-down (seconds)."""
CENTRAL_HOLD = 1.0
"""Central proxy B's failback hold-down (seconds)."""


def site_config(sim: SimCluster, rtsp_port: int = 0) -> dict[str, Any]:
    return {
        "rtsp": {"listen": f"127.0.0.1:{rtsp_port}"},
        "api": {"listen": "127.0.0.1:0", "token_env": TOKEN_ENV},
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


@dataclass
class Chain:
    sim: SimCluster
    site: Proxy
    central: Proxy
    site_port: int

    async def restart_site(self) -> None:
        """Start a new site proxy on the same RTSP port (after stopping the old one)."""
        self.site = Proxy(parse_config(site_config(self.sim, self.site_port)))
        await self.site.start()


@contextlib.asynccontextmanager
async def chain(variant: bool, central_stall: float = 0.15) -> AsyncIterator[Chain]:
    """r1, r2 (r2 re-encoding with ``variant``) -> site proxy A [r1, r2] -> central proxy
    B [A, r2] (freeze-detection floor ``central_stall``)."""
    os.environ[TOKEN_ENV] = TOKEN
    spec = SimSpec(
        recorders=[("r1", 0), ("r2", 0)],
        cameras=[CAMERA],
        fps=FPS,
        gop=GOP,
        # With another encoding in play, longer than the merger's history of outbound
        # pictures (256): a looping clip repeats its pictures, and a source could match
        # those of a loop before (bench/chained.py).
        seconds=11.0 if variant else 4.0,
        variants=["r2"] if variant else [],
    )
    async with SimCluster(spec) as sim:
        site = Proxy(parse_config(site_config(sim)))
        await site.start()
        central = Proxy(
            parse_config(
                {
                    "rtsp": {"listen": "127.0.0.1:0"},
                    "api": {"listen": "127.0.0.1:0"},
                    "cameras": {
                        CAMERA: {
                            "failback_hold": CENTRAL_HOLD,
                            "stall_timeout": central_stall,
                            "sources": [
                                {"url": site.url(CAMERA), "name": "site"},
                                {"url": sim.url("r2", CAMERA), "name": "r2"},
                            ],
                        }
                    },
                }
            )
        )
        c = Chain(sim, site, central, site.server.port)
        try:
            await wait_ready(site, (CAMERA,))
            await central.start()
            await wait_ready(central, (CAMERA,))
            yield c
        finally:
            await central.stop()
            await c.site.stop()
            os.environ.pop(TOKEN_ENV, None)


async def site_switch(http: aiohttp.ClientSession, site: Proxy, source: str | None) -> None:
    """The operator pins a source of the site proxy (None: automatic) through its API."""
    async with http.post(
        site.api_url(f"/api/v1/cameras/{CAMERA}/switch"),
        json={"source": source},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        assert resp.status == 202, await resp.text()


async def switches(http: aiohttp.ClientSession, proxy: Proxy) -> list[dict[str, Any]]:
    """The proxy's switch records, oldest first, as its API gives them."""
    async with http.get(proxy.api_url(f"/api/v1/cameras/{CAMERA}")) as resp:
        assert resp.status == 200
        body = await resp.json()
    return list(reversed(body["switches"]))


def summary(r: ProbeResult) -> str:
    return (
        f"PyAV: {r.frames_decoded} frames, {r.decode_errors} decode errors, "
        f"{r.stream_warnings} warnings {r.warnings[:3]}, repeated {r.repeated()}, "
        f"lost {r.lost()}, max gap {r.max_gap_seconds():.2f}s, error {r.error}"
    )


def check_client(r: ProbeResult, seconds: float, max_lost: int, max_gap: float) -> list[str]:
    """What the issue asks of the client of B, as a list of failures."""
    failures = []
    if r.error is not None:
        failures.append(f"client error: {r.error}")
    if r.decode_errors or [w for w in r.warnings if "missed" in w or "corrupt" in w]:
        failures.append(f"{r.decode_errors} decode errors, warnings {r.warnings[:5]}")
    if r.repeated() or r.beyond_span() > 0:
        failures.append(f"{r.repeated()} frames repeated, {r.beyond_span()} beyond the span")
    if r.lost() > max_lost:
        failures.append(f"{r.lost()} frames lost (at most {max_lost})")
    if r.max_gap_seconds() > max_gap:
        failures.append(f"picture gone for {r.max_gap_seconds():.2f} s (at most {max_gap:.2f})")
    # The read went on to the end: nothing stopped the stream for good.
    if r.frames_decoded < (seconds - 1.0) * FPS - max_lost:
        failures.append(f"only {r.frames_decoded} frames in {seconds} s")
    return failures


def check_cli(r: ToolResult, seconds: float) -> list[str]:
    failures = []
    if r.rc != 0:
        failures.append(f"ffmpeg exited {r.rc}:\n{r.tail()}")
    if r.bad_lines():
        failures.append(f"ffmpeg error lines: {r.bad_lines()[:5]}")
    if repeated(r.counters) or lost(r.counters):
        failures.append(
            f"ffmpeg counters: repeated {repeated(r.counters)}, lost {lost(r.counters)}"
        )
    if len(r.frames) < (seconds - 2) * FPS:
        failures.append(f"ffmpeg got only {len(r.frames)} frames")
    return failures


def moves(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(direction, to, reason) of each switch after the initial one."""
    return [(r["direction"], r["to"], r["reason"]) for r in records if r["direction"] != "initial"]


class Timeline:
    """Sleeps until ``t`` seconds after the read started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    async def at(self, t: float) -> None:
        await asyncio.sleep(max(0.0, self.t0 + t - time.monotonic()))


async def test_identical_recorders_site_switches_are_invisible() -> None:
    # r1 and r2 carry the same coded pictures. A switches six times (operator r2, r1, a
    # TCP close on r1 and its failback, a freeze of r1 and its failback): B must not
    # notice. Then A goes away (B goes on from r2) and comes back (B fails back).
    # B's reconnect to A is on a jittered backoff, so its failback comes 1-4 s after A is
    # back: the PyAV read lasts until 1 s after that failback (at most ``read_max``).
    cli_s, read_max = 8.5, 16.0
    stop = threading.Event()
    async with chain(variant=False) as c, aiohttp.ClientSession() as http, LoopStalls() as st:
        pyav = asyncio.create_task(
            asyncio.to_thread(read_rtsp, c.central.url(CAMERA), seconds=read_max, stop=stop)
        )
        cli = asyncio.create_task(ffmpeg_client(c.central.url(CAMERA), "tcp", cli_s))
        tl = Timeline()
        await tl.at(0.7)
        await site_switch(http, c.site, "r2")
        await tl.at(1.4)
        await site_switch(http, c.site, "r1")
        await tl.at(2.0)
        await site_switch(http, c.site, None)
        await tl.at(2.3)
        c.sim.recorders["r1"].close_connections()  # A: tcp-closed, then fails back
        await tl.at(3.8)
        c.sim.recorders["r1"].freeze()  # A: rtp-overdue
        await tl.at(4.6)
        c.sim.recorders["r1"].freeze(False)  # A fails back after its hold-down
        await tl.at(5.6)
        site_moves = moves(await switches(http, c.site))
        while_up = moves(await switches(http, c.central))
        await c.site.stop()
        await tl.at(6.6)
        await c.restart_site()
        central_moves = moves(await switches(http, c.central))
        while "failback" not in {m[0] for m in central_moves} and time.monotonic() < (
            tl.t0 + read_max - 1.5
        ):
            await asyncio.sleep(0.1)
            central_moves = moves(await switches(http, c.central))
        await asyncio.sleep(1.0)  # B's client reads on past the failback
        stop.set()
        read_s = time.monotonic() - tl.t0
        result, ff = await pyav, await cli
    failures = check_client(result, read_s, max_lost=0, max_gap=0.25 + st.longest)
    failures += check_cli(ff, cli_s)
    if len(site_moves) < 6 or {m[0] for m in site_moves} != {"manual", "failover", "failback"}:
        failures.append(f"the site proxy did not switch as asked: {site_moves}")
    if while_up:
        failures.append(f"the central proxy switched while the site proxy was up: {while_up}")
    if central_moves != [("failover", "r2", "tcp-closed"), ("failback", "site", "hold-down")]:
        failures.append(f"central proxy after the site proxy went and came back: {central_moves}")
    assert not failures, "\n".join([summary(result), f"site: {site_moves}", *failures])


async def test_reencoding_standby_site_switches() -> None:
    # r2 re-encodes (another GOP, other slices): every switch inside A between r1 and r2
    # restarts A's output at a keyframe of the other encoding, while B's standby r2 (the
    # faster copy of A's r2 pictures) and A fork and rejoin. Nothing may repeat. A freeze
    # of r1 leaves A without pictures until r2's next keyframe (up to its 2 s GOP): B,
    # configured as docs/chained.md advises (freeze budget above that), waits for A.
    read_s = 9.5
    variant_gop_s = 2 * GOP / FPS
    async with (
        chain(variant=True, central_stall=variant_gop_s + 0.5) as c,
        aiohttp.ClientSession() as http,
        LoopStalls() as st,
    ):
        pyav = asyncio.create_task(
            asyncio.to_thread(read_rtsp, c.central.url(CAMERA), seconds=read_s)
        )
        tl = Timeline()
        await tl.at(0.5)
        await site_switch(http, c.site, "r2")  # at r2's next keyframe (2 s GOP)
        await tl.at(3.0)
        await site_switch(http, c.site, "r1")  # at r1's next keyframe (1 s GOP)
        await tl.at(4.2)
        await site_switch(http, c.site, None)
        await tl.at(4.5)
        c.sim.recorders["r1"].freeze()  # A: rtp-overdue, then r2's next keyframe
        await tl.at(7.0)
        c.sim.recorders["r1"].freeze(False)  # A fails back after its hold-down
        result = await pyav
        site_moves = moves(await switches(http, c.site))
        central_moves = moves(await switches(http, c.central))
    # Operator switches lose nothing (A keeps the old encoding until the new keyframe);
    # the freeze loses what r1 did not send until r2's keyframe: detection + one r2 GOP.
    freeze_loss = (0.15 + variant_gop_s) * FPS + 3
    failures = check_client(
        result, read_s, max_lost=round(freeze_loss), max_gap=0.3 + variant_gop_s + st.longest
    )
    if [m[0] for m in site_moves] != ["manual", "manual", "failover", "failback"]:
        failures.append(f"the site proxy did not switch as asked: {site_moves}")
    if central_moves:
        failures.append(f"the central proxy switched while the site proxy was up: {central_moves}")
    assert not failures, "\n".join([summary(result), f"site: {site_moves}", *failures])
