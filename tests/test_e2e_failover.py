"""End to end: a recorder fails while FFmpeg (through PyAV) reads the proxy.

The client session must survive, every frame it gets must decode, the frame
counters must never repeat, and for identical feeds no frame may be lost; a differently
encoded standby (or merging switched off) must give the picture back within
one GOP of detection, on a keyframe.
"""

from __future__ import annotations

import asyncio

import pytest
import structlog

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.sim.camera import StreamStyle
from rmfproxy.sim.probe import ProbeResult, read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.support import LoopStalls, relay, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

FPS = 25
GOP = 25
READ_SECONDS = 6.0
FAULT_AT = 2.5


async def inject(sim: SimCluster, fault: str) -> None:
    rec = sim.recorders["r1"]
    if fault == "close":
        rec.close_connections()
        rec.server.fault_stall_rtsp = True  # and refuse to come back during the test
    elif fault == "freeze":
        rec.freeze()
    elif fault == "hung":
        rec.freeze()
        rec.stall_rtsp()
    elif fault == "restart":
        await rec.restart(3.0)


def assert_survived(
    r: ProbeResult, max_lost: int, max_gap: float, stalls: LoopStalls | None = None
) -> None:
    """``stalls``: the event loop's longest stall in the read, added to ``max_gap``."""
    stalled = stalls.longest if stalls else 0.0
    assert r.error is None, r.error
    assert r.decode_errors == 0, r.warnings[:5]
    assert not [w for w in r.warnings if "missed" in w or "corrupt" in w], r.warnings[:5]
    assert r.repeated() == 0
    assert r.lost() <= max_lost, f"lost {r.lost()} frames"
    assert r.max_gap_seconds() <= max_gap + stalled, (
        f"picture gone for {r.max_gap_seconds():.2f}s (event loop stalled {stalled:.2f}s)"
    )
    # The stream went on after the fault for the rest of the read.
    assert r.frames_decoded >= (READ_SECONDS - 1.0 - max_gap) * FPS


async def read_through_fault(
    sim: SimCluster, proxy: Proxy, fault: str, transport: str = "tcp"
) -> tuple[ProbeResult, LoopStalls]:
    async with LoopStalls() as stalls:
        reader = asyncio.create_task(
            asyncio.to_thread(
                read_rtsp,
                proxy.url("lobby"),
                transport=transport,  # type: ignore[arg-type]
                seconds=READ_SECONDS,
            )
        )
        await asyncio.sleep(FAULT_AT)
        await inject(sim, fault)
        return await reader, stalls


@pytest.mark.parametrize("fault", ["close", "freeze", "hung", "restart"])
@pytest.mark.parametrize(("codec", "transport"), [("h264", "tcp"), ("h265", "udp")])
async def test_failover_keeps_client_clean(fault: str, codec: str, transport: str) -> None:
    async with relay(codec, gop=GOP) as (sim, proxy):  # type: ignore[arg-type]
        result, stalls = await read_through_fault(sim, proxy, fault, transport)
        feed = proxy.feeds["lobby"]
        switches = [s for s in feed.switches if s.reason == "failover"]
    assert switches and switches[0].from_source == "r1" and switches[0].to_source == "r2"
    # Identical feeds: hitless. Nothing lost, nothing repeated, no stall beyond a few frames.
    assert_survived(result, max_lost=0, max_gap=0.25, stalls=stalls)


# Two recorders that re-stream as real ones do: arrival-like timestamp jitter, clocks
# apart, parameter sets on their own schedule (SDP only / every 2 s on any frame), their own
# SEI and AUD, other packetization.
REALISTIC = {
    "r1": StreamStyle(ts_jitter_ms=20, drift_ppm=150, param_interval=0, mtu=1000, own_sei=True),
    "r2": StreamStyle(ts_jitter_ms=30, drift_ppm=-150, param_interval=2, aud=True),
}


@pytest.mark.parametrize("fault", ["close", "freeze"])
@pytest.mark.parametrize(("codec", "transport"), [("h264", "udp"), ("h265", "tcp")])
async def test_failover_between_realistic_recorders_is_hitless(
    fault: str, codec: str, transport: str
) -> None:
    async with relay(codec, gop=GOP, styles=REALISTIC) as (sim, proxy):  # type: ignore[arg-type]
        result, stalls = await read_through_fault(sim, proxy, fault, transport)
        feed = proxy.feeds["lobby"]
        assert [s.merge_state.value for s in feed.slots] == ["aligned", "aligned"] or fault
    assert any(s.reason == "failover" for s in feed.switches)
    assert_survived(result, max_lost=0, max_gap=0.25, stalls=stalls)
    # Never more pictures than the camera made in the span the client saw: none went twice.
    assert result.beyond_span() <= 0, result.beyond_span()


# Cameras that never set the RTP marker bit (gortsplib keeps a list of them): access units
# end at the next timestamp, so merging, keyframe finding and switching still work.
MARKERLESS = {
    "r1": StreamStyle(marker=False, ts_jitter_ms=10),
    "r2": StreamStyle(marker=False, mtu=1000),
}


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_markerless_recorders_are_relayed_and_switched_hitless(codec: str) -> None:
    async with relay(codec, gop=GOP, styles=MARKERLESS) as (sim, proxy):  # type: ignore[arg-type]
        result, stalls = await read_through_fault(sim, proxy, "close")
        feed = proxy.feeds["lobby"]
        states = [s.merge_state.value for s in feed.slots]
    assert any(s.reason == "failover" for s in feed.switches)
    assert states[1] == "aligned", states
    assert_survived(result, max_lost=0, max_gap=0.25, stalls=stalls)
    assert result.beyond_span() <= 0, result.beyond_span()


@pytest.mark.parametrize("fault", ["close", "freeze"])
async def test_keyframe_switch_without_hitless(fault: str) -> None:
    # With merging off the switch waits for the standby's keyframe: back within one GOP.
    async with relay("h264", gop=GOP, camera={"hitless": False}) as (sim, proxy):
        result, stalls = await read_through_fault(sim, proxy, fault)
    assert_survived(result, max_lost=GOP + 10, max_gap=0.5 + GOP / FPS, stalls=stalls)


@pytest.mark.parametrize("fault", ["close", "freeze"])
@pytest.mark.parametrize(("codec", "transport"), [("h264", "tcp"), ("h265", "udp")])
async def test_differently_encoded_standby_resumes_at_keyframe(
    fault: str, codec: str, transport: str
) -> None:
    # r2 serves another encoding (2 s GOP, other bitrate) under another payload type,
    # which the proxy rewrites to the announced one (FFmpeg drops foreign PTs).
    async with relay(codec, gop=GOP, variants=["r2"], payload_types={"r2": 98}) as (sim, proxy):  # type: ignore[arg-type]
        result, stalls = await read_through_fault(sim, proxy, fault, transport)
    # The picture is back within one of the standby's GOPs, on a keyframe.
    assert_survived(result, max_lost=2 * GOP + 10, max_gap=0.5 + 2 * GOP / FPS, stalls=stalls)


async def test_failback_after_hold_down_is_clean() -> None:
    camera = {"failback_hold": 1.0}
    async with relay("h264", gop=GOP, camera=camera) as (sim, proxy), LoopStalls() as stalls:
        reader = asyncio.create_task(
            asyncio.to_thread(read_rtsp, proxy.url("lobby"), seconds=READ_SECONDS)
        )
        await asyncio.sleep(1.5)
        sim.recorders["r1"].freeze()
        await asyncio.sleep(1.5)
        sim.recorders["r1"].freeze(False)
        result = await reader
        reasons = [(s.reason, s.to_source) for s in proxy.feeds["lobby"].switches]
    assert ("failover", "r2") in reasons and ("failback", "r1") in reasons
    assert_survived(result, max_lost=0, max_gap=0.25, stalls=stalls)


async def test_both_down_then_back_resumes() -> None:
    async with relay("h264", gop=GOP) as (sim, proxy):
        reader = asyncio.create_task(
            asyncio.to_thread(read_rtsp, proxy.url("lobby"), seconds=READ_SECONDS)
        )
        await asyncio.sleep(1.5)
        sim.recorders["r1"].freeze()
        sim.recorders["r2"].freeze()
        await asyncio.sleep(2.0)
        sim.recorders["r2"].freeze(False)
        result = await reader
    assert result.error is None and result.decode_errors == 0 and result.repeated() == 0
    assert result.max_gap_seconds() < 2.0 + 0.5 + GOP / FPS
    # Frames arrived again after the outage.
    assert result.arrivals[-1] - result.arrivals[0] > READ_SECONDS - 1.5


async def test_sessions_end_after_the_outage_limit() -> None:
    # Every source down for longer than outage_limit: the proxy ends the client sessions
    # (the client sees the connection close) instead of holding them open forever.
    async with relay("h264", gop=GOP, camera={"outage_limit": 1.0}) as (sim, proxy):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reader = asyncio.create_task(
            asyncio.to_thread(read_rtsp, proxy.url("lobby"), seconds=READ_SECONDS)
        )
        await asyncio.sleep(1.5)
        sim.recorders["r1"].freeze()
        sim.recorders["r2"].freeze()
        result = await reader
        took = loop.time() - t0
        assert proxy.feeds["lobby"].clients == 0
    assert result.decode_errors == 0 and result.frames_decoded > 0
    # Fault at 1.5 s + detection + the 1 s limit (+ margin). Without the limit the client
    # would sit until its own 5 s read timeout (6.5 s) or the end of the 8 s read.
    assert took < 1.5 + 0.5 + 1.0 + 2.0, f"session ended after {took:.1f} s"


@pytest.mark.parametrize("fault", ["close", "freeze"])
async def test_audio_switches_with_its_video(fault: str) -> None:
    # Cameras with a PCMU track: the audio follows the video to the standby at the same
    # switch, keeps decoding, and its timeline never goes backwards.
    async with relay("h264", gop=GOP, audio=True) as (sim, proxy):
        await asyncio.sleep(1.0)  # the heartbeat learns the frame interval
        result, stalls = await read_through_fault(sim, proxy, fault)
        feed = proxy.feeds["lobby"]
        switches = [s for s in feed.switches if s.reason == "failover"]
    assert switches and switches[0].to_source == "r2"
    assert_survived(result, max_lost=0, max_gap=0.25, stalls=stalls)
    assert result.audio_decode_errors == 0
    assert result.audio_frames_decoded >= (READ_SECONDS - 1.5) * FPS
    assert result.audio_repeated() == 0 and result.audio_pts_backwards() == 0
    # Audio is relayed from the active source only: what the old source did not deliver
    # before the switch is lost (nothing for a close, the freeze-detection window for a
    # freeze: ~150 ms at 25 packets/s).
    assert result.audio_lost() <= (1 if fault == "close" else 8), result.audio_lost()
    # After the switch the audio comes on: the last counters are right behind the video's.
    last_video = max(c for c in result.counters if c is not None)
    assert (last_video - result.audio_counters[-1]) & 0xFFFFFFFF <= 5  # 32-bit audio counter


async def test_a_standby_with_another_codec_is_never_switched_to() -> None:
    # lobby's primary serves H.264, its standby H.265: the proxy announced H.264, so when
    # the primary freezes it waits (error log + metric) instead of sending H.265 to a
    # client that is decoding H.264; the picture comes back, clean, with the primary.
    async with (
        SimCluster(SimSpec(recorders=[("r1", 0)], codec="h264", gop=GOP)) as sim264,
        SimCluster(SimSpec(recorders=[("r1", 0)], codec="h265", gop=GOP)) as sim265,
    ):
        cfg = parse_config(
            {
                "rtsp": {"listen": "127.0.0.1:0"},
                "api": {"enabled": False},
                "cameras": {
                    "lobby": {
                        "sources": [
                            {"url": sim264.url("r1", "lobby"), "name": "avc"},
                            {"url": sim265.url("r1", "lobby"), "name": "hevc"},
                        ]
                    }
                },
            }
        )
        proxy = Proxy(cfg)
        feed = proxy.feeds["lobby"]
        with structlog.testing.capture_logs() as logs:
            await proxy.start()
            try:
                await wait_ready(proxy, ("lobby",))
                reader = asyncio.create_task(
                    asyncio.to_thread(read_rtsp, proxy.url("lobby"), seconds=READ_SECONDS)
                )
                await asyncio.sleep(FAULT_AT)
                sim264.recorders["r1"].freeze()
                await asyncio.sleep(2.0)
                assert feed.source_name(feed.active) == "avc"  # never switched to hevc
                sim264.recorders["r1"].freeze(False)
                result = await reader
            finally:
                await proxy.stop()
    assert feed.incompatible_sources >= 1
    errors = [e for e in logs if e["event"] == "feed.source_incompatible"]
    assert errors and errors[0]["source"] == "hevc" and errors[0]["log_level"] == "error"
    assert not [s for s in feed.switches if s.to_source == "hevc"]
    assert result.error is None and result.decode_errors == 0 and result.repeated() == 0
    assert result.codec_name == "h264"
    assert result.max_gap_seconds() < 2.0 + 1.0 + GOP / FPS  # back with the primary
