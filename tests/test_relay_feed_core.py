"""The feed core without sockets or tasks: synthetic H.264 recorders, fake client sinks
and a fake clock stepped as the runner steps it (the timer fired at every deadline).

What it proves: a freeze is detected at the active source's heartbeat deadline and the
switch is made at the standby's keyframe; failback waits for the hold-down; an outage
closes the clients after ``outage_limit`` and is counted; a manual pin holds and is
released; ``deadline()`` is what the runner must honour (the freeze deadline of the
active source; sender reports only while clients get packets)."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable

import pytest

from rmfproxy.relay import feed_core
from rmfproxy.relay.feed_core import MAX_WAIT, SR_INTERVAL, TICK, FeedCore, FeedTuning
from rmfproxy.relay.standby import Mode, Standby
from rmfproxy.rtp import rtcp
from rmfproxy.rtsp.sdp import SessionDescription
from tests.merge_support import Recorder, h264_camera

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
)
FRAME = 0.04
_SEQ_TS = struct.Struct("!HI")
GOP = 10


class Sink:
    """A client: what it got, and when (the rig's clock)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.packets_sent = 0
        self.headers: list[tuple[int, int]] = []
        """(sequence number, timestamp) of every RTP packet it got."""
        self.packets_dropped = 0
        self.keyframes: list[float] = []
        """When each keyframe's first packet came."""
        self.reports: list[tuple[float, bytes]] = []
        self.closed: tuple[float, str] | None = None

    def deliver_many(self, track: int, packets: Iterable[tuple[bytes | bytearray, bool]]) -> None:
        for packet, keyframe_start in packets:
            self.packets_sent += 1
            self.headers.append(_SEQ_TS.unpack_from(packet, 2))
            if keyframe_start:
                self.keyframes.append(self.rig.now)

    def deliver_rtcp(self, track: int, packet: bytes) -> None:
        self.reports.append((self.rig.now, packet))

    def close(self, reason: str) -> None:
        self.closed = (self.rig.now, reason)


class Rig:
    """A feed core with ``count`` hot sources r0, r1... re-streaming one 25 fps camera."""

    def __init__(self, count: int = 2, *, hitless: bool = True, outage_limit: float = 60.0) -> None:
        self.now = 0.0
        self.core = FeedCore(
            "lobby",
            count,
            FeedTuning(failback_hold=1.0, hitless=hitless, outage_limit=outage_limit),
            wall=lambda: 1.7e9 + self.now,
        )
        for slot in self.core.slots:
            slot.name = f"r{slot.index}"
        self.core.on_start(self.now)
        self.camera = h264_camera(600, seed=3, gop=GOP)
        self.recorders = [
            Recorder(ssrc=i + 1, seq=3000 * i, ts=777 * i, seed=i) for i in range(count)
        ]
        self.fired: list[float] = []
        """When the timer fired."""
        self.switched_at: list[tuple[int, float]] = []
        """(AU number, time) of each switch, seen after the AU was pushed."""

    def fire(self) -> None:
        """The timer fires at the core's deadline (or now, if that has passed)."""
        self.now = max(self.now, self.core.deadline())
        self.core.on_timer(self.now)
        self.fired.append(self.now)

    def advance(self, to: float) -> None:
        """Let the clock run to ``to``, the timer firing at every deadline on the way."""
        while self.core.deadline() <= to:
            self.fire()
        self.now = to

    def connect(self, *sources: int) -> None:
        for i in sources:
            self.core.on_connected(i, SessionDescription.parse(SDP), self.now)

    def run(self, first: int, last: int, sources: tuple[int, ...]) -> None:
        """AUs ``first`` to ``last`` of the camera, each from ``sources``, a frame apart."""
        for n in range(first, last + 1):
            self.advance(n * FRAME)
            before = self.core.switch_count
            for s in sources:
                for pkt in self.recorders[s].packets(n, self.camera[n]):
                    self.core.on_packet(s, 0, False, pkt, self.now)
            if self.core.switch_count != before:
                self.switched_at.append((n, self.now))


def started(rig: Rig, sink: Sink | None = None) -> None:
    """Both sources flowing, r0 relayed. Merged, the stream starts on r0's first keyframe
    (AU 0: it came before the first check chose r0, and r0 holds it); without merging,
    on r0's first keyframe after that check (AU 10)."""
    rig.connect(0, 1)
    rig.run(0, 0, (0, 1))
    if sink is not None:
        rig.core.attach(sink)
    rig.run(1, 29, (0, 1))
    assert rig.core.active == 0 and rig.core.switch_count == 1
    assert rig.switched_at == ([] if rig.core.hitless else [(10, 10 * FRAME)])


def test_a_merged_stream_starts_on_the_keyframe_that_came_before_the_choice() -> None:
    # The first check comes up to MAX_WAIT after the recorders' first packets: the keyframe
    # that began their streams has gone by. The merger holds it: the client gets AU 0 on,
    # at the first check (not at the next keyframe, a GOP later), every picture once.
    rig = Rig()
    sink = Sink(rig)
    rig.connect(0, 1)
    rig.core.attach(sink)
    rig.run(0, 0, (0, 1))
    assert sink.headers == []  # not chosen yet
    rig.run(1, 12, (0, 1))
    assert sink.keyframes[0] == rig.fired[0] <= MAX_WAIT  # at the first check
    stamps = list(dict.fromkeys(ts for _, ts in sink.headers))
    assert len(stamps) == 13  # AUs 0 to 12: none lost, none twice
    assert [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)] == [3600] * 12
    assert rig.core.switch_count == 1 and rig.core.switches[-1].reason == "initial"


def test_failover_on_a_freeze_at_the_standbys_keyframe() -> None:
    rig = Rig(hitless=False)  # no merging: every switch restarts at a keyframe
    sink = Sink(rig)
    started(rig, sink)
    last = rig.now  # r0 freezes after AU 29
    budget = rig.core.slots[0].heartbeat.budget()
    rig.run(30, 45, (1,))
    assert rig.core.active == 1
    rec = rig.core.switches[-1]
    assert (rec.from_source, rec.to_source, rec.reason, rec.cause) == (
        "r0",
        "r1",
        "failover",
        "rtp-overdue",
    )
    # Decided by the timer just after r0's heartbeat deadline, not a frame later.
    assert budget < rec.detection_s <= budget + 0.002 + 1e-9
    # Made at r1's first keyframe after the decision (AU 40), which went out first.
    assert rig.switched_at[-1] == (40, 40 * FRAME)
    assert sink.keyframes[-1] == 40 * FRAME
    assert rec.gap_s == pytest.approx(40 * FRAME - last)
    assert rig.core.dropped_packets == 0 and sink.closed is None


def test_hitless_failover_sends_every_picture_once() -> None:
    # Identical recorders, merged: when r0 freezes, r1's copies of the next pictures go
    # out at once (no keyframe wait), numbered on: every AU from the first keyframe (0)
    # to the last (45) reaches the client once, sequence numbers without a gap.
    rig = Rig()
    sink = Sink(rig)
    started(rig, sink)
    rig.run(30, 45, (1,))
    assert rig.core.active == 1 and rig.core.switches[-1].reason == "failover"
    seqs = [seq for seq, _ in sink.headers]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    stamps = list(dict.fromkeys(ts for _, ts in sink.headers))
    assert len(stamps) == 45 - 0 + 1  # one timestamp per picture: none lost, none twice
    assert all(0 < (b - a) & 0xFFFFFFFF < 0x80000000 for a, b in itertools.pairwise(stamps))


def test_failback_after_the_hold_down() -> None:
    rig = Rig(hitless=False)
    started(rig)
    rig.run(30, 45, (1,))
    assert rig.core.active == 1
    back = 46 * FRAME  # r0 delivers again from AU 46
    rig.run(46, 120, (0, 1))
    rec = rig.core.switches[-1]
    assert (rec.from_source, rec.to_source, rec.reason, rec.cause) == (
        "r1",
        "r0",
        "failback",
        "hold-down",
    )
    n, at = rig.switched_at[-1]
    # Healthy for the whole hold-down (1 s), then at r0's next keyframe.
    assert n % GOP == 0 and back + 1.0 <= at < back + 1.0 + MAX_WAIT + GOP * FRAME
    assert rec.detection_s == 0.0
    assert rig.core.active == 0 and rig.core.switch_count == 3


def test_an_outage_closes_the_clients_after_the_limit_and_is_counted() -> None:
    rig = Rig(outage_limit=2.0)
    sink = Sink(rig)
    started(rig, sink)
    frozen = rig.now + rig.core.slots[0].heartbeat.budget()  # both freeze after AU 29
    rig.advance(frozen + 1.9)
    assert rig.core.no_source_since == pytest.approx(frozen, abs=0.01)
    assert sink.closed is None  # clients wait through an outage...
    rig.advance(frozen + 2.0 + MAX_WAIT + 0.01)
    assert sink.closed is not None  # ... up to outage_limit
    at, why = sink.closed
    assert why == "no-source" and frozen + 2.0 < at <= frozen + 2.0 + MAX_WAIT + 0.01
    assert rig.core.clients == 0
    assert rig.core.no_source_seconds == pytest.approx(rig.now - frozen, abs=MAX_WAIT)
    # A source back: the outage ends, the time without one stops growing.
    rig.run(200, 210, (1,))
    counted = rig.core.no_source_seconds
    assert rig.core.no_source_since is None and rig.core.active == 1
    rig.run(211, 260, (1,))
    assert rig.core.no_source_seconds == counted


def test_manual_pin_and_back_to_automatic() -> None:
    rig = Rig(hitless=False)
    started(rig)
    with pytest.raises(ValueError, match="no source 'r9'"):
        rig.core.switch_to("r9", rig.now)
    rig.core.switch_to("r1", rig.now)
    rig.run(30, 100, (0, 1))  # r0, higher priority, healthy all along: the pin holds
    assert rig.core.active == 1 and rig.switched_at[-1] == (30, 30 * FRAME)
    assert (rig.core.switches[-1].reason, rig.core.switches[-1].cause) == ("manual", "operator")
    rig.core.switch_to(None, rig.now)  # r0 usable for longer than the hold-down: at once
    rig.run(101, 130, (0, 1))
    assert rig.core.active == 0 and rig.switched_at[-1] == (110, 110 * FRAME)
    assert [s.reason for s in rig.core.switches] == ["initial", "manual", "failback"]


def test_the_deadline_is_the_active_sources_freeze_deadline() -> None:
    rig = Rig(1)
    rig.connect(0)
    rig.run(0, 29, (0,))
    rig.now += 0.005
    rig.fire()  # a check just after AU 29
    hb = rig.core.slots[0].heartbeat
    assert hb.last_packet == 29 * FRAME
    due = 29 * FRAME + hb.budget() + 0.002
    assert TICK < due - rig.now < MAX_WAIT
    assert rig.core.deadline() == pytest.approx(due)
    # Fired then, the check finds the source frozen: not one frame or one tick later.
    rig.fire()
    assert rig.now == pytest.approx(due) and rig.core.no_source_since == rig.now
    # Nothing connected: the health is checked every MAX_WAIT.
    rig.core.on_lost(0, "tcp-closed", rig.now)
    assert rig.core.deadline() == pytest.approx(rig.now + MAX_WAIT)


def test_sender_reports_are_timed_only_while_clients_get_packets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(1)
    rig.connect(0)
    rig.run(0, 29, (0,))
    assert rig.core.active == 0
    # Rarer health checks and measurements, so that a report is the earliest deadline.
    monkeypatch.setattr(feed_core, "MAX_WAIT", 10.0)
    monkeypatch.setattr(feed_core, "METER_INTERVAL", 10.0)
    rig.core.on_lost(0, "tcp-closed", rig.now)  # no freeze deadline left either
    rig.fire()
    checked = rig.now
    assert rig.core.deadline() > checked + SR_INTERVAL  # no client: no report due
    sink = Sink(rig)
    rig.core.attach(sink)
    due = rig.core.deadline()
    assert checked < due <= checked + SR_INTERVAL
    rig.fire()
    rig.fire()
    times = [t for t, _ in sink.reports]
    assert times == [pytest.approx(due), pytest.approx(due + SR_INTERVAL)]
    report = sink.reports[0][1]
    assert report[1] == rtcp.SR and int.from_bytes(report[4:8], "big") == rig.core.ssrc(0)
    rig.core.detach(sink)
    assert rig.core.deadline() > rig.now + SR_INTERVAL


def test_a_malformed_video_packet_is_counted_and_dropped() -> None:
    rig = Rig(1)
    rig.connect(0)
    rig.run(0, 12, (0,))
    sent = rig.core.fanout.packets_sent if rig.core.fanout else 0
    bad = rig.recorders[0].packets(13, rig.camera[13])[0]
    bad[0] |= 0x10  # an extension header that is not there
    del bad[14:]
    rig.core.on_packet(0, 0, False, bad, rig.now)
    padded = rig.recorders[0].packets(14, rig.camera[14])[0]
    padded[0] |= 0x20
    padded[-1] = 0  # padding of zero bytes (RFC 3550 §5.1: the count includes itself)
    rig.core.on_packet(0, 0, False, padded, rig.now)
    assert rig.core.dropped_packets == 2 and rig.core.slots[0].packets_dropped == 2
    assert rig.core.fanout is not None and rig.core.fanout.packets_sent == sent


def test_a_warm_standby_of_another_codec_is_never_promoted() -> None:
    # Once its SDP is known, a warm standby that does not carry the stream's format is not
    # offered to the policy (it could never be switched to): when the active source
    # freezes, the feed waits instead of promoting it.
    core = FeedCore("lobby", 2, standby=[Standby(Mode.HOT), Standby(Mode.WARM)])
    core.on_start(0.0)
    core.on_connected(0, SessionDescription.parse(SDP), 0.0)
    core.on_connected(1, SessionDescription.parse(SDP.replace("H264", "H265")), 0.0)
    core.slots[1].standby.on_ready()
    assert not core.slots[1].compatible
    assert not core.slots[1].available(1.0)
    core.on_timer(1.0)  # the active source never sent anything: no healthy source
    assert [c for c in core.controls if c[0] == 1] == []


def test_an_output_stall_restarts_once_per_period_and_is_not_delivering_until_video_flows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net restarts the stream when nothing went out for OUTPUT_STALL although
    the active source is healthy; readiness must keep saying "not delivering" through the
    restart (it once flipped back at each restart while clients still got nothing)."""
    rig = Rig()
    sink = Sink(rig)
    started(rig, sink)
    core = rig.core
    assert core.delivering(rig.now)
    merger = core.merger
    assert merger is not None
    real_push = merger.push
    stuck = True

    def push(*args: object) -> object:
        out = real_push(*args)
        return () if stuck else out

    monkeypatch.setattr(merger, "push", push)
    sent = sink.packets_sent
    rig.run(30, 30 + int(2.5 * feed_core.OUTPUT_STALL / FRAME), (0, 1))
    assert sink.packets_sent == sent
    assert core.output_stalls == 2  # at OUTPUT_STALL and at 2 x OUTPUT_STALL, not more
    assert not core.delivering(rig.now)
    stuck = False
    first = int(rig.now / FRAME) + 1
    rig.run(first, first + 2 * GOP, (0, 1))
    assert sink.packets_sent > sent and core.delivering(rig.now)
