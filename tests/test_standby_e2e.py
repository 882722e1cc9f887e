"""End to end: warm and cold standbys over real RTSP, read by FFmpeg (PyAV).

A warm standby costs (almost) no WAN bytes while standing by, takes over when the primary
recorder is killed with the client's picture clean (decoded, nothing repeated, a bounded
gap), and is paused again after the failback; a cold one is not connected at all until
then. A recorder that refuses PAUSE gets TEARDOWN + SETUP instead. Bytes are checked on
both ends: the proxy's WAN counters and the packets the simulated recorder sent.
"""

from __future__ import annotations

import asyncio

import pytest
import structlog

from rmfproxy.app import Proxy
from rmfproxy.relay.standby import State
from rmfproxy.sim.probe import ProbeResult, read_rtsp
from rmfproxy.sim.runner import SimCluster
from tests.support import LoopStalls, relay

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

FPS = 25
GOP = 25
SECONDS = 11.0
"""The simulated clip's length: longer than the merger's history (256 AUs), so a promoted
standby whose first keyframe is newer than the stream's head cannot be matched to the
copy of that picture one loop earlier (which would drop its pictures as copies)."""
READ = 6.5
"""Seconds the warm standby test's client reads: past the failback, which comes 1 to 3 s
after the primary is back (jittered reconnect, 1 s hold, a switch point)."""
MAX_GAP = 0.6
"""Seconds: detection (~0.15 s for a kill: the TCP close is immediate) + PLAY round trip +
the recorder's first keyframe (its buffered GOP is sent at once) + a loaded CI box."""


def recorder_packets(sim: SimCluster, name: str) -> int:
    """RTP packets the simulated recorder sent to its clients (its own count)."""
    return sim.recorders[name].cameras["lobby"].fanout.client_packets()[0]


def wan(proxy: Proxy, index: int) -> int:
    return proxy.feeds["lobby"].slots[index].wan_received


def assert_clean(r: ProbeResult, stalls: LoopStalls, read: float) -> None:
    assert r.error is None, r.error
    assert r.decode_errors == 0, r.warnings[:5]
    assert r.repeated() == 0 and r.beyond_span() <= 0, (r.repeated(), r.beyond_span())
    assert r.max_gap_seconds() <= MAX_GAP + stalls.longest, (
        f"picture gone {r.max_gap_seconds():.2f}s (loop stalled {stalls.longest:.2f}s)"
    )
    assert r.frames_decoded >= (read - 1.5 - MAX_GAP) * FPS


async def standing_by(sim: SimCluster, proxy: Proxy, seconds: float) -> tuple[float, int, int]:
    """(standby WAN bytes / primary WAN bytes, standby recorder packets, primary's) over
    ``seconds``."""
    w0, w1 = wan(proxy, 0), wan(proxy, 1)
    p1 = recorder_packets(sim, "r2")
    p0 = recorder_packets(sim, "r1")
    await asyncio.sleep(seconds)
    ratio = (wan(proxy, 1) - w1) / max(1, wan(proxy, 0) - w0)
    return ratio, recorder_packets(sim, "r2") - p1, recorder_packets(sim, "r1") - p0


async def test_warm_standby_pauses_takes_over_and_pauses_again() -> None:
    camera = {"failback_hold": 1.0}
    options = {"r2": {"standby": "warm"}}
    async with relay("h264", gop=GOP, camera=camera, source_options=options, seconds=SECONDS) as (
        sim,
        proxy,
    ):
        feed = proxy.feeds["lobby"]
        async with LoopStalls() as stalls:
            reader = asyncio.create_task(
                asyncio.to_thread(read_rtsp, proxy.url("lobby"), seconds=READ)
            )
            await asyncio.sleep(0.5)
            assert feed.slots[1].standby_state is State.PAUSED
            ratio, standby_pkts, primary_pkts = await standing_by(sim, proxy, 1.0)
            assert ratio <= 0.05 and standby_pkts == 0 and primary_pkts > FPS, (ratio, standby_pkts)
            sim.recorders["r1"].kill()
            await asyncio.sleep(1.0)
            assert feed.source_name(feed.active) == "r2"
            # Back (the reconnect it hung in is dropped): failed back to once r1 has been
            # healthy for the 1 s hold, after its jittered reconnect, at a switch point.
            sim.recorders["r1"].clear()
            sim.recorders["r1"].close_connections()
            back = asyncio.get_running_loop().time()
            async with asyncio.timeout(3.5):
                while feed.source_name(feed.active) != "r1":
                    await asyncio.sleep(0.05)
            assert asyncio.get_running_loop().time() - back >= 1.0  # not before the hold
            async with asyncio.timeout(1.0):
                while feed.slots[1].standby_state is not State.PAUSED:
                    await asyncio.sleep(0.05)
            ratio, standby_pkts, _ = await standing_by(sim, proxy, 0.7)
            assert ratio <= 0.05 and standby_pkts == 0, (ratio, standby_pkts)
            result = await reader
    reasons = [(s.reason, s.to_source) for s in feed.switches]
    assert ("failover", "r2") in reasons and ("failback", "r1") in reasons
    assert_clean(result, stalls, READ)


async def test_cold_standby_connects_only_on_failure() -> None:
    options = {"r2": {"standby": "cold"}}
    async with relay("h264", gop=GOP, source_options=options, seconds=SECONDS) as (sim, proxy):
        feed = proxy.feeds["lobby"]
        r2 = sim.recorders["r2"].server
        async with LoopStalls() as stalls:
            reader = asyncio.create_task(
                asyncio.to_thread(read_rtsp, proxy.url("lobby"), seconds=4.0)
            )
            await asyncio.sleep(1.0)
            assert not r2.connections and not r2.sessions  # not connected at all
            assert wan(proxy, 1) == 0 and feed.slots[1].wan_sent == 0
            assert feed.slots[1].standby_state is State.DISCONNECTED
            sim.recorders["r1"].kill()
            await asyncio.sleep(1.5)
            assert feed.source_name(feed.active) == "r2" and r2.sessions
            slot = feed.slots[1]
            assert slot.standby_state is State.FLOWING
            # Every byte on the connection counts: RTP plus its interleaving headers and the
            # RTSP replies; the requests (OPTIONS, DESCRIBE, SETUP, PLAY) are sent bytes.
            assert slot.wan_received > slot.bytes + 4 * slot.packets and slot.wan_sent > 200
            result = await reader
    assert_clean(result, stalls, 4.0)


async def test_a_recorder_that_refuses_pause_is_set_up_again_without_play() -> None:
    options = {"r2": {"standby": "warm"}}
    camera = {"failback_hold": 0.0}
    async with relay("h264", gop=GOP, camera=camera, source_options=options) as (sim, proxy):
        sim.recorders["r2"].pause_quirk("refuse")
        feed = proxy.feeds["lobby"]
        with structlog.testing.capture_logs() as logs:
            feed.switch_to("r2")  # an operator pins the standby: PLAYed, switched to
            async with asyncio.timeout(5):
                while feed.source_name(feed.active) != "r2":
                    await asyncio.sleep(0.05)
            feed.switch_to(None)  # back to r1; r2's PAUSE gets 501: TEARDOWN, SETUP
            async with asyncio.timeout(5):
                while feed.slots[1].standby_state is not State.PAUSED:
                    await asyncio.sleep(0.05)
            assert feed.source_name(feed.active) == "r1"
            ratio, standby_pkts, _ = await standing_by(sim, proxy, 1.0)
        assert ratio <= 0.05 and standby_pkts == 0, (ratio, standby_pkts)
        assert not feed.slots[1].standby.pause_supported
        assert [e["reason"] for e in logs if e["event"] == "feed.pause_unsupported"] == [
            "pause-refused"
        ]
        # The recorder holds one session of ours again, set up and not playing.
        r2 = sim.recorders["r2"].server
        assert [s.state.value for s in r2.sessions.values()] == ["ready"]
