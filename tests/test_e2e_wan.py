"""Freeze detection that knows the link: two recorders, each behind its own WAN link (80 ms
RTT, ±20 ms jitter, a 300 ms TCP stall every 3 s, never both at once). The stalls are what
the path does, not failures: no failover while both recorders are alive. A recorder killed
behind its link is still found at once and switched within half a second; FFmpeg (PyAV)
reading the proxy sees every frame once and no decode error.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from rmfproxy.sim.impair import Impairment
from rmfproxy.sim.probe import read_rtsp
from tests.support import LoopStalls, relay

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

WAN = Impairment(delay=0.04, jitter=0.02, stall_every=3.0, stall_for=0.3, seed=5)
READ_SECONDS = 11.0
KILL_AT = 9.0


async def test_wan_stalls_cause_no_failover_and_a_kill_is_still_found_at_once() -> None:
    async with (
        relay("h264", gop=25, impairment=WAN) as (sim, proxy),
        LoopStalls() as stalls,
    ):
        feed = proxy.feeds["lobby"]
        reader = asyncio.create_task(
            asyncio.to_thread(read_rtsp, proxy.url("lobby"), seconds=READ_SECONDS)
        )
        await asyncio.sleep(KILL_AT)
        steady = [(s.reason, s.cause) for s in feed.switches if s.reason != "initial"]
        budgets = [round(s.heartbeat.budget(feed.clock()), 3) for s in feed.slots]
        active = feed.source_name(feed.active)
        assert active is not None
        killed_at = time.time()
        sim.recorders[active].close_connections()
        sim.recorders[active].server.fault_stall_rtsp = True  # and stays away
        result = await reader
        after = [s for s in feed.switches if s.reason == "failover" and s.from_source == active]
    # Each link stalled about three times while both recorders were alive: no switch.
    assert steady == [], (steady, budgets)
    # The path's allowance, not the LAN floor, and well under a second.
    assert all(0.3 < b < 1.0 for b in budgets), budgets
    assert after, "the killed recorder was not switched away from"
    # A kill is a close: known when it crosses the link (one-way delay), not by a budget.
    switch_s = after[0].at - killed_at
    assert switch_s < 0.5 + stalls.longest, (switch_s, stalls.longest)
    assert result.error is None, result.error
    assert result.decode_errors == 0, result.warnings[:5]
    assert result.repeated() == 0
    assert result.lost() == 0, f"lost {result.lost()} frames"
    # Never more pictures than the camera made in the span the client saw: none went twice.
    assert result.beyond_span() <= 0, result.beyond_span()
