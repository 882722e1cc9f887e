"""The merger, driven with synthetic recorders and a fake clock (no sockets).

The recorders here behave as real ones do (tests/merge_support.py): own
numbering and packetization, timestamps with jitter and drift, parameter sets
on their own schedule, SEI and AUD of their own, markers or not.
"""

from __future__ import annotations

import itertools
import random

import pytest

from rmfproxy.relay.merge import Merger, MergeState
from rmfproxy.rtp import h264, h265
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.seqnum import ts_diff
from tests.merge_support import (
    FPS,
    TICKS,
    Recorder,
    check_numbering,
    depacketized,
    h264_camera,
    h265_camera,
    push_all,
    slices_of,
)


def run_pair(
    m: Merger,
    cam: list[list[bytes]],
    a: Recorder,
    b: Recorder,
    *,
    a_until: int | None = None,
    b_from: int = 0,
    lag_b: float = 0.0,
    drop: dict[tuple[int, int], int] | None = None,
) -> list[bytearray]:
    """Both recorders deliver every AU (A first, or B when ``lag_b`` < 0); A stops after
    ``a_until``; ``drop[(source, n)] = k`` loses packet k of that source's AU n."""
    out: list[bytearray] = []
    drop = drop or {}
    events: list[tuple[float, int, list[bytearray]]] = []
    for n, au in enumerate(cam):
        t = n / FPS
        pa, pb = a.packets(n, au), b.packets(n, au)
        for (src, k), idx in drop.items():
            if k == n:
                pkts = pa if src == 0 else pb
                del pkts[min(idx, len(pkts) - 1)]
        if a_until is None or n <= a_until:
            events.append((t, 0, pa))
        if n >= b_from:
            events.append((t + lag_b, 1, pb))
    events.sort(key=lambda e: e[0])
    for t, index, pkts in events:
        out += push_all(m, index, pkts, t)
    return out


def merger(fmt: object = h264.FORMAT, seed: int = 5) -> Merger:
    m = Merger(fmt, 90000, random.Random(seed))  # type: ignore[arg-type]
    m.anchor(0)
    m.active = 0
    return m


def test_identical_feeds_merge_without_loss_or_repeat_across_wraparound() -> None:
    cam = h264_camera(60, seed=1)
    a = Recorder(mtu=1400, seq=65500, ts=0xFFFFF000, ssrc=1)  # both bases wrap
    b = Recorder(mtu=900, seq=100, ts=12345, ssrc=2)
    m = merger()
    m.timeline.seq = 65530  # and the outbound numbering wraps too
    m.timeline.ts = 0xFFFFFF00
    out = run_pair(m, cam, a, b, a_until=30, lag_b=0.004)
    frames = check_numbering(out, m.timeline.ssrc)
    assert len(frames) == 60
    assert all(ts_diff(y, x) == TICKS for x, y in itertools.pairwise(frames))
    assert m.aligned(0) and m.aligned(1)
    assert depacketized(h264.FORMAT, out) == cam  # every AU once, whatever the packetization


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_jitter_drift_and_own_habits_never_send_an_au_twice(codec: str) -> None:
    # Two re-streaming recorders: ±30 ms of timestamp jitter each, clocks 200 ppm apart,
    # parameter sets on different AUs (A: every keyframe; B: every 7th AU; SDP only would
    # be the same for the merger), their own SEI and AUD, other MTUs, B without marker bits.
    fmt = h264.FORMAT if codec == "h264" else h265.FORMAT
    cam = h264_camera(400, seed=7) if codec == "h264" else h265_camera(400, seed=7)
    sei = b"\x06\x05\x01\x00\x80" if codec == "h264" else b"\x4e\x01\x05\x01\x00\x80"
    a = Recorder(fmt, mtu=1400, ssrc=1, jitter_ms=30, drift_ppm=100, seed=1, sei=sei)
    b = Recorder(fmt, mtu=600, seq=4000, ts=99, ssrc=2, jitter_ms=30, drift_ppm=-100, seed=2)
    b.params, b.aud, b.marker = "every:7", True, False
    m = merger(fmt)
    rng = random.Random(3)
    out: list[bytearray] = []
    for n, au in enumerate(cam):  # either may come first, by up to 30 ms
        order = [(0, a.packets(n, au)), (1, b.packets(n, au))]
        rng.shuffle(order)
        for index, pkts in order:
            out += push_all(m, index, pkts, n / FPS + rng.uniform(0, 0.03))
    frames = check_numbering(out, m.timeline.ssrc)
    aus = depacketized(fmt, out)
    # Every picture once, in order (the last one of B waits for its next packet: no marker).
    assert [slices_of(fmt, x) for x in aus] == [slices_of(fmt, x) for x in cam[: len(aus)]]
    assert len(aus) >= len(cam) - 1
    # Outbound time advances by the camera's frame spacing, not by a recorder's jitter
    # (once the spacing is known: it is averaged over the AUs seen).
    steps = [ts_diff(y, x) for x, y in itertools.pairwise(frames)][10:]
    assert min(steps) >= 0.8 * TICKS and max(steps) <= 1.2 * TICKS, (min(steps), max(steps))
    total = ts_diff(frames[-1], frames[0])
    assert abs(total - (len(frames) - 1) * TICKS) < 0.02 * total  # follows the clocks
    # Every keyframe leaves decodable on its own, whichever copy won.
    for x in aus:
        types = [fmt.nal_type(n) for n in x]
        if any(t in fmt.irap_types for t in types):
            assert set(fmt.param_types) <= set(types), types
    assert m.state(0) is MergeState.ALIGNED and m.state(1) is MergeState.ALIGNED


class StampsOnArrival(Recorder):
    """A recorder that was stopped (SIGSTOP) for AUs ``stall``: it got them late, all at
    once, and stamped each as it arrived (a few ms apart) after the stall."""

    stall = range(100, 125)

    def stamp(self, n: int) -> int:
        if n in self.stall:
            return super().stamp(self.stall.stop) - (self.stall.stop - n) * 90
        return super().stamp(n)


def test_a_recorders_backlog_burst_after_a_stall_does_not_slow_the_timeline() -> None:
    # A (jitter ±30 ms) stalls for 1 s and then bursts its backlog, stamped on arrival;
    # B carries the stream meanwhile and is gone at AU 150; A carries on alone. Its
    # burst must not shrink the frame spacing A's timeline is sent with (a client would
    # get more pictures per second of stream time than the camera made).
    cam = h264_camera(330, seed=21)
    a = StampsOnArrival(mtu=900, ssrc=1, jitter_ms=30, seed=4)
    b = Recorder(mtu=700, seq=50, ts=777, ssrc=2, jitter_ms=30, seed=5)
    m = merger()
    events: list[tuple[float, int, int, list[bytearray]]] = []
    for n, au in enumerate(cam):
        late = a.stall.stop if n in a.stall else n
        events.append((late / FPS + 0.002, 0, n, a.packets(n, au)))
        if n < 150:
            events.append((n / FPS, 1, n, b.packets(n, au)))
    events.sort(key=lambda e: (e[0], e[2]))
    out: list[bytearray] = []
    for t, index, _n, pkts in events:
        out += push_all(m, index, pkts, t)
    frames = check_numbering(out, m.timeline.ssrc)
    assert [slices_of(h264.FORMAT, x) for x in depacketized(h264.FORMAT, out)] == [
        slices_of(h264.FORMAT, x) for x in cam
    ]
    steps = [ts_diff(y, x) for x, y in itertools.pairwise(frames)][160:]
    assert min(steps) >= 0.8 * TICKS and max(steps) <= 1.2 * TICKS, (min(steps), max(steps))
    total = ts_diff(frames[-1], frames[160])
    assert abs(total - (len(frames) - 161) * TICKS) < 0.05 * total


def test_sdp_only_parameter_sets_are_inserted_before_keyframes() -> None:
    cam = h264_camera(30, seed=11)
    a = Recorder(params="sdp", ssrc=1)
    m = Merger(h264.FORMAT, 90000, random.Random(1))
    m.reset_source(0, {7: cam[0][0], 8: cam[0][1]})
    m.anchor(0)
    out = []
    for n, au in enumerate(cam):
        out += push_all(m, 0, a.packets(n, au), n / FPS)
    aus = depacketized(h264.FORMAT, out)
    assert len(aus) == 30 and m.params_inserted == 3
    for x in aus:
        if any(h264.nal_type(n) == 5 for n in x):
            assert [h264.nal_type(n) for n in x][:2] == [7, 8]


def test_loss_on_the_faster_source_is_filled_by_the_slower_one() -> None:
    # B is 15 ms ahead and wins every AU; it loses a packet of AUs 20 and 33. A fills them,
    # B holds what it got meanwhile, finds itself again, and nothing is lost or repeated.
    cam = h264_camera(60, seed=12)
    a, b = Recorder(mtu=700, ssrc=1), Recorder(mtu=700, seq=9, ssrc=2, ts=5)
    m = merger()
    out = run_pair(m, cam, a, b, lag_b=-0.015, drop={(1, 20): 1, (1, 33): 0})
    assert depacketized(h264.FORMAT, out) == cam
    assert m.stats(1)["broken"] == 2 and m.stats(1)["sent"] > 40


def test_a_source_alone_carries_on_after_its_own_loss() -> None:
    # No other source can fill the gap: the stream goes on (the client conceals), it does
    # not freeze.
    cam = h264_camera(30, seed=13)
    a = Recorder(mtu=500, ssrc=1)
    m = merger()
    out = []
    for n, au in enumerate(cam):
        pkts = a.packets(n, au)
        if n == 12:
            del pkts[0]
        out += push_all(m, 0, pkts, n / FPS)
    assert len(depacketized(h264.FORMAT, out)) == 29


def test_broken_au_is_never_sent_half() -> None:
    cam = h264_camera(3, seed=2)
    a = Recorder(mtu=500)
    m = merger()
    assert push_all(m, 0, a.packets(0, cam[0]), 0.0)  # the keyframe starts the timeline
    second = a.packets(1, cam[1])
    assert len(second) > 2
    del second[1]  # a lost packet inside the AU
    assert push_all(m, 0, second, 0.04) == []


def test_a_standby_that_starts_transcoding_is_observed_different() -> None:
    # B relays the camera, then (frame 40, at a keyframe) starts sending its own encoding.
    cam = h264_camera(120, seed=14)
    other = h264_camera(120, seed=99)
    a, b = Recorder(ssrc=1, jitter_ms=10, seed=1), Recorder(ssrc=2, seq=7, jitter_ms=10, seed=2)
    m = merger()
    out = []
    for n in range(120):
        out += push_all(m, 0, a.packets(n, cam[n]), n / FPS)
        out += push_all(m, 1, b.packets(n, cam[n] if n < 40 else other[n]), n / FPS + 0.01)
        if n == 30:
            assert m.state(1) is MergeState.ALIGNED
    assert m.state(1) is MergeState.DIFFERENT
    assert [e.state for e in m.events if e.index == 1][-1] is MergeState.DIFFERENT
    assert depacketized(h264.FORMAT, out) == cam  # A's pictures only, each once


def test_the_active_source_wins_when_the_faster_standby_starts_transcoding() -> None:
    # B is ahead and sends every AU first; when it switches to another encoding the stream
    # follows B's pictures until A (the active source) restarts it at A's next keyframe.
    cam = h264_camera(120, seed=15)
    other = h264_camera(120, seed=98)
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=50)
    m = merger()
    out = []
    for n in range(120):
        out += push_all(m, 1, b.packets(n, cam[n] if n < 40 else other[n]), n / FPS)
        out += push_all(m, 0, a.packets(n, cam[n]), n / FPS + 0.01)
    assert m.state(1) is MergeState.DIFFERENT
    aus = depacketized(h264.FORMAT, out)
    assert aus[-30:] == cam[-30:]  # back on A's pictures
    assert aus[:40] == cam[:40]
    frames = check_numbering(out, m.timeline.ssrc)
    assert len(frames) == len(set(frames))


def test_a_far_future_timestamp_never_stops_the_stream() -> None:
    # One spoofed packet (complete AU, next sequence number, marker, timestamp 2^31 ahead)
    # must not make every genuine AU after it look old.
    cam = h264_camera(50, seed=16)
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=300)
    m = merger()
    out = []
    for n, au in enumerate(cam):
        out += push_all(m, 0, a.packets(n, au), n / FPS)
        out += push_all(m, 1, b.packets(n, au), n / FPS + 0.005)
        if n == 20:
            spoof = rtp.build(96, a.seq, (a.ts + 0x80000000) & 0xFFFFFFFF, 1, b"\x41" + bytes(50))
            a.seq += 1
            out += push_all(m, 0, [bytearray(spoof[:12]) + b"\x41\x9a" + bytes(40)], n / FPS)
    aus = depacketized(h264.FORMAT, out)
    assert len(aus) >= 50  # the genuine ones all went out (plus at most the spoofed one)
    frames = check_numbering(out, m.timeline.ssrc)
    steps = [ts_diff(y, x) for x, y in itertools.pairwise(frames)]
    assert max(steps) <= 2 * TICKS


def test_a_source_whose_timestamps_jump_is_realigned_alone() -> None:
    cam = h264_camera(80, seed=17)
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=300)
    m = merger()
    out = []
    for n, au in enumerate(cam):
        if n == 30:
            a.ts = (a.ts + 123_456_789) & 0xFFFFFFFF  # A's clock steps (restart w/o reconnect)
        out += push_all(m, 0, a.packets(n, au), n / FPS)
        if n < 60:
            out += push_all(m, 1, b.packets(n, au), n / FPS + 0.005)
    assert depacketized(h264.FORMAT, out) == cam
    frames = check_numbering(out, m.timeline.ssrc)
    steps = [ts_diff(y, x) for x, y in itertools.pairwise(frames)]
    assert min(steps) >= 0.75 * TICKS and max(steps) <= 1.25 * TICKS


def test_differently_encoded_source_is_anchored_at_its_keyframe() -> None:
    m = merger()
    a = Recorder(ssrc=1, seq=10, ts=1000)
    b = Recorder(ssrc=2, seq=50000, ts=777)
    cam_a, cam_b = h264_camera(20, seed=3), h264_camera(20, seed=4)  # other content
    out = []
    for n in range(5):
        out += push_all(m, 0, a.packets(n, cam_a[n]), n / FPS)
        out += push_all(m, 1, b.packets(n, cam_b[n]), n / FPS)
    assert not m.aligned(1)
    last_seq, last_ts = rtp.sequence(out[-1]), rtp.timestamp(out[-1])
    m.anchor(1)
    switched = []
    for n in range(5, 15):  # A is gone; B's next keyframe is frame 10
        switched += push_all(m, 1, b.packets(n, cam_b[n]), n / FPS)
    assert switched and (rtp.sequence(switched[0]) - last_seq) & 0xFFFF == 1
    assert ts_diff(rtp.timestamp(switched[0]), last_ts) == 6 * TICKS  # wall time since frame 4
    assert depacketized(h264.FORMAT, switched)[0][0][0] & 0x1F == 7  # starts with the SPS
    assert not m.aligned(0)


def test_restart_at_a_cra_drops_its_rasl_pictures_only() -> None:
    cam_a = h265_camera(30, seed=5, gop=10, rasl=2)
    cam_b = h265_camera(30, seed=6, gop=10, rasl=2)
    a, b = Recorder(h265.FORMAT, ssrc=1), Recorder(h265.FORMAT, ssrc=2, seq=40)
    m = merger(h265.FORMAT)
    out = []
    for n in range(7):
        out += push_all(m, 0, a.packets(n, cam_a[n]), n / FPS)
    m.anchor(1)
    for n in range(7, 30):
        out += push_all(m, 1, b.packets(n, cam_b[n]), n / FPS)
    aus = depacketized(h265.FORMAT, out)
    types = [next(h265.nal_type(n) for n in x if h265.nal_type(n) < 32) for x in aus]
    # A from its CRA (its own RASL after the very first CRA went too: nothing before it),
    # then B from its CRA at 10: RASL 11, 12 dropped; at 20 the stream is continuous, so
    # RASL 21, 22 are kept (they decode).
    assert types == [21, 1, 1, 1, 1, 21, *[1] * 7, 21, 8, 8, *[1] * 7], types
    assert m.leading_dropped == 4


def test_marker_less_source_ends_its_aus_at_the_next_timestamp() -> None:
    cam = h264_camera(20, seed=18)
    a = Recorder(marker=False, mtu=800)
    m = merger()
    out = []
    for n, au in enumerate(cam):
        out += push_all(m, 0, a.packets(n, au), n / FPS)
    aus = depacketized(h264.FORMAT, out)
    assert aus == cam[:19]  # the last one ends with the next packet
    assert all(
        rtp.marker(p) == (i == len(out) - 1 or rtp.timestamp(out[i + 1]) != rtp.timestamp(p))
        for i, p in enumerate(out)
    )


def test_anchoring_a_source_that_turns_out_identical_and_behind_repeats_nothing() -> None:
    # B reconnected and has not matched yet when the policy wants it: the feed anchors it.
    # B is 60 ms behind, so its next keyframe is one the stream already carried.
    cam = h264_camera(60, seed=21)
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=77)
    m = merger()
    out = []
    for n, au in enumerate(cam):
        out += push_all(m, 0, a.packets(n, au), n / FPS)
        if n >= 15:
            if n == 15:
                m.reset_source(1)
                m.anchor(1)
            out += push_all(m, 1, b.packets(n, au), n / FPS + 0.06)
    assert depacketized(h264.FORMAT, out) == cam
    assert m.aligned(1) and not m.anchoring(1)


@pytest.mark.parametrize("lag_new", [0.005, -0.005])
def test_a_planned_switch_to_another_encoding_shows_no_instant_twice(lag_new: float) -> None:
    # A (active, still healthy) hands over to B, another encoding of the same camera, at B's
    # keyframe (an operator switch, a failback; a site proxy chained behind a central one).
    # Both deliver every instant; B's copy of an instant comes 5 ms after A's (or before).
    # B's keyframe is instant 30: instants 0-29 from A, 30 on from B, each exactly once.
    cam_a, cam_b = h264_camera(60, seed=21), h264_camera(60, seed=22, gop=30)
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=900, ts=12345)
    m = merger()
    out: list[bytearray] = []
    for n in range(60):
        if n == 20:
            m.anchor(1)
        pushes = [(0, a.packets(n, cam_a[n]), 0.0), (1, b.packets(n, cam_b[n]), lag_new)]
        for index, pkts, lag in sorted(pushes, key=lambda p: p[2]):
            out += push_all(m, index, pkts, n / FPS + 0.1 + lag)
    assert depacketized(h264.FORMAT, out) == cam_a[:30] + cam_b[30:]
    assert m.stats(0)["replaced"] == (1 if lag_new > 0 else 0)
    frames = check_numbering(out, m.timeline.ssrc)
    steps = [ts_diff(y, x) for x, y in itertools.pairwise(frames)]
    assert min(steps) >= 0.75 * TICKS and max(steps) <= 1.25 * TICKS


def test_a_cancelled_anchor_restarts_nothing() -> None:
    # The feed called its switch off (the active source came back before the standby's
    # keyframe): the stream stays on A's pictures, and A's AUs held meanwhile go out.
    cam_a, cam_b = h264_camera(60, seed=23), h264_camera(60, seed=24, gop=30)
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=900, ts=12345)
    m = merger()
    out: list[bytearray] = []
    for n in range(60):
        if n == 20:
            m.anchor(1)
        if n == 25:
            m.cancel_anchor(1)
        out += push_all(m, 0, a.packets(n, cam_a[n]), n / FPS)
        out += push_all(m, 1, b.packets(n, cam_b[n]), n / FPS + 0.005)
    assert depacketized(h264.FORMAT, out) == cam_a  # no restart at B's keyframe (30)
    assert not m.anchoring(1) and m.stats(1)["sent"] == 0


def test_a_source_taking_over_a_looping_scene_is_not_placed_a_loop_behind() -> None:
    # The scene repeats its coded pictures every 2 s (a static scene a GOP later, a looping
    # clip): B connects after A died and is alone. Matched to the same pictures sent a
    # loop ago, every AU of it would be a copy and nothing would go out; it is restarted
    # at its keyframe instead, and the stream goes on.
    loop = h264_camera(50, seed=31, gop=10)
    cam = loop * 4
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=4000, ts=777)
    m = merger()
    out: list[bytearray] = []
    for n in range(120):
        out += push_all(m, 0, a.packets(n, cam[n]), n / FPS)
    m.reset_source(1)
    m.anchor(1)  # the feed fails over to B
    for n in range(121, 200):
        out += push_all(m, 1, b.packets(n, cam[n]), n / FPS)
    got = depacketized(h264.FORMAT, out)
    assert got[:120] == cam[:120]
    assert got[120:] == cam[130:200]  # from B's first keyframe on, every picture once


def test_a_different_standby_that_turns_into_a_copy_ahead_is_aligned_again() -> None:
    # B sends its own encoding (called different, it holds only its last few AUs), then from
    # frame 100 the camera's pictures, three frames ahead of A: it is found again (the
    # stream sends a copy of a picture it holds) and every picture goes out once.
    cam = h264_camera(200, seed=21)
    other = h264_camera(200, seed=22)
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=500)
    m = merger()
    out = []
    aligned_at = None
    for n in range(200):
        out += push_all(m, 0, a.packets(n, cam[n]), n / FPS + 0.01)
        ahead = n + 3
        if n < 97:
            out += push_all(m, 1, b.packets(n, other[n]), n / FPS)
        elif ahead < 200:
            out += push_all(m, 1, b.packets(ahead, cam[ahead]), n / FPS)
        if n == 90:
            assert m.state(1) is MergeState.DIFFERENT
        if aligned_at is None and m.state(1) is MergeState.ALIGNED:
            aligned_at = n
    assert aligned_at == 100  # when A sent the first picture B held a copy of
    aus = depacketized(h264.FORMAT, out)
    assert aus == cam  # A's pictures, then B's copies ahead of A: each once, in order
    frames = check_numbering(out, m.timeline.ssrc)
    assert len(frames) == len(set(frames))


def test_the_stream_starts_on_a_long_fast_start_burst_s_keyframe() -> None:
    # A recorder's fast start: its whole current GOP (2.4 s at 25 fps, 60 AUs) at once,
    # then live. The source is chosen after that: the stream starts on the burst's
    # keyframe, every AU of it once, in order (not at the next keyframe, a GOP later).
    cam = h264_camera(80, seed=23, gop=100)  # one keyframe: AU 0
    a, b = Recorder(ssrc=1), Recorder(ssrc=2, seq=900)
    m = Merger(h264.FORMAT, 90000, random.Random(5))
    for n in range(60):
        push_all(m, 0, a.packets(n, cam[n]), 0.0)
        push_all(m, 1, b.packets(n, cam[n]), 0.001)
    out = [pkt for pkt, _ in m.start_held(0, 0.01)]
    m.active = 0
    for n in range(60, 80):
        out += push_all(m, 0, a.packets(n, cam[n]), n / FPS)
        out += push_all(m, 1, b.packets(n, cam[n]), n / FPS + 0.005)
    assert depacketized(h264.FORMAT, out) == cam
    assert m.state(1) is MergeState.ALIGNED  # the other recorder found its place
