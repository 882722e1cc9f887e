"""End to end: a client joining at any moment starts on a keyframe with its parameter sets
and decodes its very first picture, whatever the sources send (independent encodings,
parameter sets only in the SDP or every few seconds on any frame, own SEI/AUD)."""

from __future__ import annotations

import asyncio
import random

import pytest

from rmfproxy.sim.camera import StreamStyle
from rmfproxy.sim.probe import ProbeResult, read_rtsp
from tests.support import relay

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

JOINS = 20
LANES = 2
"""Clients joining one after another in each lane, the lanes side by side: a join mostly
waits (for its moment, for FFmpeg's probe), so two lanes take half the time."""


async def join_many(url: str, joins: int = JOINS) -> list[ProbeResult]:
    async def lane(seed: int, count: int) -> list[ProbeResult]:
        rng = random.Random(seed)
        results = []
        for _ in range(count):
            await asyncio.sleep(rng.uniform(0.0, 0.5))  # land anywhere in the GOP
            results.append(await asyncio.to_thread(read_rtsp, url, seconds=1.5, max_frames=4))
        return results

    counts = [joins // LANES + (i < joins % LANES) for i in range(LANES)]
    lanes = await asyncio.gather(*(lane(8 + i, n) for i, n in enumerate(counts)))
    return [r for results in lanes for r in results]


def assert_clean_joins(results: list[ProbeResult]) -> None:
    for i, r in enumerate(results):
        assert r.error is None, (i, r.error)
        assert r.frames_decoded >= 1, (i, r.warnings[:3])
        assert r.decode_errors == 0 and not r.warnings, (i, r.warnings[:3])
        assert r.first_frame_key is True, i
        assert r.first_packet_key is True, i  # its stream began on a keyframe, not before one
        # A picture sent twice is a defect the decoder may not report: counters must advance.
        assert r.repeated() == 0 and r.frames_decoded <= len(r.counters), i
        assert r.beyond_span() <= 0, (i, r.beyond_span())


async def test_joins_with_two_differently_encoded_h265_sources() -> None:
    # The report: with another H.265 encoding on the standby a joining client sometimes
    # started on a delta frame ("Could not find ref with POC ..."). 20 joins in a row.
    async with relay("h265", gop=25, variants=["r2"]) as (_sim, proxy):
        results = await join_many(proxy.url("lobby"))
    assert_clean_joins(results)


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_joins_when_recorders_place_parameter_sets_their_own_way(codec: str) -> None:
    # r1 sends parameter sets only in the SDP, r2 every 3 s in front of any frame, with its
    # own SEI and AUD and jittered timestamps: every keyframe still leaves with them.
    styles = {
        "r1": StreamStyle(param_interval=0, ts_jitter_ms=15, mtu=900),
        "r2": StreamStyle(param_interval=3, own_sei=True, aud=True, ts_jitter_ms=15),
    }
    async with relay(codec, gop=25, styles=styles) as (_sim, proxy):  # type: ignore[arg-type]
        results = await join_many(proxy.url("lobby"), joins=10)
    assert_clean_joins(results)
