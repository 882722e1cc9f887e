"""Standby modes without sockets: the policy with sources available on demand, the standby
state machine, and a feed driven through fake sources and a fake clock (what it promotes,
demotes, PAUSEs, parks or disconnects, and when it switches)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from rmfproxy.config import ConfigError, parse_config
from rmfproxy.relay.feed import Feed, StandbySpec
from rmfproxy.relay.feed_core import FeedTuning
from rmfproxy.relay.policy import INITIAL_GRACE, Reason, SwitchPolicy
from rmfproxy.relay.standby import PROMOTE_TIMEOUT, RETRY_AFTER, Action, Mode, Standby, State
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.upstream.source import SourceStats
from tests.merge_support import Recorder, h264_camera

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
)
FRAME = 0.04


# the policy -----------------------------------------------------------------------


def test_policy_without_standbys_is_unchanged() -> None:
    p = SwitchPolicy(2, failback_hold=1.0)
    assert p.decide(0.0, [True, True], None, [False, False]) == p.decide(0.0, [True, True], None)
    assert SwitchPolicy(2).decide(0.0, [False, True], 0, None).target == 1  # type: ignore[union-attr]


def test_failover_prefers_a_flowing_source_over_promoting_a_higher_priority_one() -> None:
    p = SwitchPolicy(3, failback_hold=1.0)
    # r0 active fails; r1 is warm (available), r2 hot and flowing: r2 now, no promotion.
    d = p.decide(0.0, [False, False, True], 0, [False, True, False])
    assert d is not None and (d.target, d.reason) == (2, Reason.FAILOVER)
    # ... and r1, higher than r2, is failed back to once usable for the hold-down.
    assert p.decide(0.5, [False, False, True], 2, [False, True, False]) is None
    d = p.decide(1.1, [False, False, True], 2, [False, True, False])
    assert d is not None and (d.target, d.reason) == (1, Reason.FAILBACK)


def test_failover_promotes_the_best_available_standby_when_nothing_flows() -> None:
    p = SwitchPolicy(3)
    d = p.decide(0.0, [False, False, False], 0, [False, True, True])
    assert d is not None and (d.target, d.reason) == (1, Reason.FAILOVER)
    # The active source restarting on its own (available again) is not a switch target.
    assert p.decide(0.0, [False, False, False], 0, [True, False, False]) is None


def test_initial_choice_waits_for_the_hot_primary_before_promoting_a_standby() -> None:
    p = SwitchPolicy(2)
    # The warm r1 is set up before the hot primary has delivered anything.
    assert p.decide(0.0, [False, False], None, [False, True]) is None
    d = p.decide(0.5, [True, False], None, [False, True])
    assert d is not None and (d.target, d.reason) == (0, Reason.INITIAL)
    # With the primary still silent after the grace, the standby is promoted.
    p = SwitchPolicy(2)
    p.decide(0.0, [False, False], None, [False, True])
    d = p.decide(INITIAL_GRACE + 0.1, [False, False], None, [False, True])
    assert d is not None and d.target == 1
    # A warm primary is promoted at once, even with a hot standby flowing already.
    d = SwitchPolicy(2).decide(0.0, [False, True], None, [True, False])
    assert d is not None and (d.target, d.reason) == (0, Reason.INITIAL)


def test_manual_pin_of_a_paused_standby() -> None:
    p = SwitchPolicy(2)
    p.set_manual(1)
    d = p.decide(0.0, [True, False], 0, [False, True])
    assert d is not None and (d.target, d.reason) == (1, Reason.MANUAL)
    assert p.decide(0.0, [True, False], 0, [False, False]) is None  # not available: stay


# the standby state machine ----------------------------------------------------------


def test_standby_plan() -> None:
    warm = Standby(Mode.WARM, state=State.PAUSED)
    assert warm.available(0.0)
    assert warm.plan(False, 0.0, True) is None
    assert warm.plan(True, 0.0, True) is Action.PROMOTE
    warm.on_promote(0.0)
    assert warm.available(0.1) and warm.plan(True, 0.1, True) is None
    warm.on_media()
    assert warm.state is State.FLOWING and not warm.available(0.2)
    assert warm.plan(False, 0.2, True) is Action.DEMOTE
    # Promoted, no media for too long: demoted and not chosen for a while.
    warm = Standby(Mode.WARM, state=State.PAUSED)
    warm.on_promote(0.0)
    assert warm.plan(True, PROMOTE_TIMEOUT + 0.1, True) is Action.DEMOTE
    warm.on_ready()
    assert not warm.available(PROMOTE_TIMEOUT + 1)
    assert warm.available(PROMOTE_TIMEOUT + 0.2 + RETRY_AFTER)
    # Warm and lost (reconnecting): not available; cold and idle: presumed available.
    assert not Standby(Mode.WARM, state=State.DISCONNECTED).available(0.0)
    cold = Standby(Mode.COLD)
    assert cold.available(0.0) and cold.plan(True, 0.0, False) is Action.PROMOTE
    assert cold.plan(False, 0.0, True) is Action.DEMOTE  # a reconnect loop nobody needs
    cold.on_promote(0.0)
    cold.on_lost(1.0)  # the recorder refused the connection
    assert not cold.available(1.0 + RETRY_AFTER - 0.1) and cold.available(1.0 + RETRY_AFTER)
    sub = Standby(Mode.WARM, substream=True)
    sub.on_substream(True)
    assert sub.state is State.SUBSTREAM
    assert sub.available(0.0, substream_alive=True) and not sub.available(0.0, False)
    assert not Standby(Mode.HOT, state=State.FLOWING).available(0.0)
    assert Standby(Mode.HOT).plan(True, 0.0, False) is None


def test_config_standby_fields() -> None:
    def cam(*sources: dict[str, Any]) -> dict[str, Any]:
        return {"cameras": {"lobby": {"sources": list(sources)}}}

    cfg = parse_config(
        cam(
            {"url": "rtsp://a/x", "standby": "warm"},
            {"url": "rtsp://b/x", "standby": "warm", "standby_url": "rtsp://b/sub"},
            {"url": "rtsp://c/x", "standby": "cold"},
        )
    )
    assert [s.standby for s in cfg.cameras["lobby"].sources] == ["warm", "warm", "cold"]
    assert parse_config(cam({"url": "rtsp://a/x"})).cameras["lobby"].sources[0].standby == "hot"
    with pytest.raises(ConfigError, match=r"sources\.1: standby_url is only used with standby"):
        parse_config(cam({"url": "rtsp://a/x"}, {"url": "rtsp://b/x", "standby_url": "rtsp://b/y"}))
    with pytest.raises(ConfigError, match=r"sources\[0\]\.standby: the first source"):
        parse_config(cam({"url": "rtsp://a/x", "standby": "cold"}))
    with pytest.raises(ConfigError, match=r"sources\.0\.standby"):
        parse_config(cam({"url": "rtsp://a/x", "standby": "tepid"}))
    with pytest.raises(ConfigError, match=r"standby_url"):
        parse_config(cam({"url": "rtsp://a/x", "standby": "warm", "standby_url": "http://b/y"}))


# a feed with fake sources ------------------------------------------------------------


class FakeSource:
    """What the feed calls on an RtspSource, recorded; sessions reported as a real one does."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self.autoplay = True
        self.pause_ignored = False
        self.pause_answer = "paused"
        self.stats = SourceStats()
        self.transport = "tcp"
        self.calls: list[str] = []
        self.playing = False
        """Media flows (a real source drops what comes while paused or parked)."""

    async def run(self) -> None:
        self.calls.append("run")
        self.playing = self.autoplay
        if self.autoplay:
            self.listener.on_connected(SessionDescription.parse(SDP))
        else:
            self.listener.on_ready(SessionDescription.parse(SDP))
        await asyncio.Event().wait()

    async def resume(self) -> bool:
        self.calls.append("resume")
        self.playing = True
        self.listener.on_connected(SessionDescription.parse(SDP))
        return True

    async def pause(self) -> str:
        self.calls.append("pause")
        if self.pause_answer == "paused":
            self.playing = self.pause_ignored
        return self.pause_answer

    async def park(self) -> None:
        self.calls.append("park")
        self.playing = False
        await asyncio.sleep(0)
        self.listener.on_ready(SessionDescription.parse(SDP))

    async def aclose(self) -> None:
        self.calls.append("aclose")
        self.playing = False


class Rig:
    """A two-source feed (r0 hot primary, r1 in ``mode``) on a fake clock."""

    def __init__(self, mode: Mode) -> None:
        self.now = 0.0
        self.fakes: list[FakeSource] = []

        def make(index: int, listener: Any) -> tuple[str, Any]:
            fake = FakeSource(listener)
            self.fakes.append(fake)
            return f"r{index}", fake

        self.feed = Feed(
            "lobby",
            make,
            2,
            FeedTuning(failback_hold=1.0),
            clock=lambda: self.now,
            standby=[StandbySpec(Mode.HOT), StandbySpec(mode)],
        )
        self.camera = h264_camera(400, seed=3, gop=10)
        self.recorders = [Recorder(ssrc=1, seed=1), Recorder(ssrc=2, seq=9000, ts=777, seed=2)]
        self.sent = 0

    def push(self, source: int, n: int) -> None:
        """AU ``n`` of the camera from ``source``."""
        fake = self.fakes[source]
        if not fake.playing:
            return
        listener = fake.listener
        for pkt in self.recorders[source].packets(n, self.camera[n]):
            listener.on_packet(0, False, pkt)

    async def frames(self, first: int, last: int, sources: tuple[int, ...]) -> None:
        """AUs ``first`` to ``last`` from ``sources``, a frame interval apart, the feed's
        timer fired between; the control tasks the feed starts run in between."""
        for n in range(first, last + 1):
            self.now += FRAME
            for s in sources:
                self.push(s, n)
            self.feed._on_timer()
            await asyncio.sleep(0)

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    def state(self, index: int) -> State:
        return self.feed.slots[index].standby_state


async def start(rig: Rig) -> None:
    """r0 playing and relayed, r1 standing by."""
    feed = rig.feed
    feed.start()
    await rig.settle()
    await rig.frames(0, 29, (0,))
    assert feed.source_name(feed.active) == "r0"


async def test_warm_standby_is_promoted_on_failover_and_paused_after_failback() -> None:
    rig = Rig(Mode.WARM)
    feed = rig.feed
    try:
        await start(rig)
        assert rig.state(1) is State.PAUSED and rig.fakes[1].calls == ["run"]
        assert not rig.fakes[1].autoplay  # set up without PLAY: no media while standing by
        assert feed.slots[1].available(rig.now) and not feed.slots[1].healthy(rig.now)
        # The primary's connection drops: the paused standby is PLAYed.
        rig.fakes[0].playing = False
        rig.fakes[0].listener.on_lost("tcp-closed")
        await rig.settle()
        assert rig.fakes[1].calls == ["run", "resume"] and rig.state(1) is State.STARTING
        assert feed.pending is not None and feed.pending.target == 1
        # Its first packets: a recorder's fast start from its GOP's keyframe (AU 20, which
        # the primary delivered): located by content, the stream goes on hitless.
        head = feed.merger.head if feed.merger else 0
        await rig.frames(20, 45, (1,))
        assert feed.source_name(feed.active) == "r1" and rig.state(1) is State.FLOWING
        assert feed.merger is not None and feed.merger.head - head == 16  # AUs 30-45, once
        assert feed.switches[-1].reason == "failover"
        # The primary comes back; after the hold-down the feed fails back and r1 is paused.
        rig.fakes[0].listener.on_connected(SessionDescription.parse(SDP))
        rig.fakes[0].playing = True
        await rig.frames(46, 90, (0, 1))
        await rig.settle()
        assert feed.source_name(feed.active) == "r0"
        assert feed.switches[-1].reason == "failback"
        assert rig.fakes[1].calls == ["run", "resume", "pause"] and rig.state(1) is State.PAUSED
        assert not feed.slots[1].healthy(rig.now) and feed.slots[1].available(rig.now)
    finally:
        await feed.stop()


@pytest.mark.parametrize("how", ["refused", "ignored"])
async def test_a_recorder_without_pause_is_parked_instead(how: str) -> None:
    rig = Rig(Mode.WARM)
    feed = rig.feed
    if how == "refused":
        rig.fakes[1].pause_answer = "refused"
    try:
        with structlog.testing.capture_logs() as logs:
            await start(rig)
            for cycle in range(2):
                rig.fakes[0].playing = False
                rig.fakes[0].listener.on_lost("tcp-closed")
                await rig.settle()
                base = 100 * (cycle + 1)
                await rig.frames(base, base + 15, (1,))
                assert feed.source_name(feed.active) == "r1"
                rig.fakes[0].listener.on_connected(SessionDescription.parse(SDP))
                rig.fakes[0].playing = True
                await rig.frames(base + 16, base + 60, (0, 1))
                await rig.settle()
                assert feed.source_name(feed.active) == "r0"
                if how == "ignored" and cycle == 0:
                    # PAUSE answered 200, but the media goes on: the source says so.
                    assert rig.state(1) is State.PAUSED
                    rig.fakes[1].pause_ignored = True
                    feed._on_timer()
                    await rig.settle()
                assert rig.state(1) is State.PAUSED
        calls = rig.fakes[1].calls
        # The first demotion tries PAUSE, then TEARDOWN + SETUP without PLAY (park); the
        # second parks at once.
        assert calls == ["run", "resume", "pause", "park", "resume", "park"], calls
        warned = [e for e in logs if e["event"] == "feed.pause_unsupported"]
        assert len(warned) == 1 and warned[0]["log_level"] == "warning"
        assert not feed.slots[1].standby.pause_supported
    finally:
        await feed.stop()


async def test_cold_standby_is_connected_only_while_needed() -> None:
    rig = Rig(Mode.COLD)
    feed = rig.feed
    try:
        await start(rig)
        assert rig.fakes[1].calls == [] and rig.state(1) is State.DISCONNECTED
        assert feed.slots[1].available(rig.now)
        rig.fakes[0].playing = False
        rig.fakes[0].listener.on_lost("tcp-closed")
        await rig.settle()
        assert rig.fakes[1].calls == ["run"] and rig.fakes[1].autoplay
        await rig.frames(20, 45, (1,))
        assert feed.source_name(feed.active) == "r1" and rig.state(1) is State.FLOWING
        rig.fakes[0].listener.on_connected(SessionDescription.parse(SDP))
        rig.fakes[0].playing = True
        await rig.frames(46, 90, (0, 1))
        await rig.settle()
        assert feed.source_name(feed.active) == "r0"
        assert rig.fakes[1].calls == ["run", "aclose"]  # TEARDOWN, loop stopped
        assert rig.state(1) is State.DISCONNECTED and (1, False) not in feed._runs
    finally:
        await feed.stop()


async def test_a_promotion_that_brings_no_media_gives_up() -> None:
    rig = Rig(Mode.WARM)
    feed = rig.feed
    try:
        await start(rig)
        rig.fakes[0].playing = False
        rig.fakes[0].listener.on_lost("tcp-closed")
        await rig.settle()
        assert rig.state(1) is State.STARTING
        # PLAY answered, but nothing comes.
        rig.now += PROMOTE_TIMEOUT + 0.1
        feed._on_timer()
        await rig.settle()
        assert rig.fakes[1].calls[-1] == "pause" and rig.state(1) is State.PAUSED
        assert not feed.slots[1].available(rig.now) and feed.pending is None
        rig.now += RETRY_AFTER
        feed._on_timer()
        await rig.settle()
        assert rig.fakes[1].calls[-1] == "resume"  # tried again
    finally:
        await feed.stop()
