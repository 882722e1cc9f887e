"""The hitless merger, driven with synthetic packets and a fake clock (no sockets)."""

from __future__ import annotations

import itertools
import random
import weakref

from rmfproxy.relay.merge import Merger
from rmfproxy.rtp import h264
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.nal import KeyframeTracker
from rmfproxy.rtp.seqnum import seq_diff, ts_diff

FPS = 25
TICKS = 90000 // FPS


def access_units(count: int, seed: int, gop: int = 10) -> list[list[bytes]]:
    rng = random.Random(seed)
    aus = []
    for i in range(count):
        if i % gop == 0:
            aus.append(
                [
                    b"\x67" + rng.randbytes(12),
                    b"\x68" + rng.randbytes(4),
                    b"\x65" + rng.randbytes(rng.randrange(200, 4000)),
                ]
            )
        else:
            aus.append([b"\x41" + rng.randbytes(rng.randrange(50, 3000))])
    return aus


class Recorder:
    """Packetizes AUs with its own MTU, SSRC, sequence and timestamp bases."""

    def __init__(self, mtu: int, seq: int, ts: int, ssrc: int) -> None:
        self.mtu, self.seq, self.ts, self.ssrc = mtu, seq, ts, ssrc

    def packets(self, n: int, au: list[bytes]) -> list[bytearray]:
        payloads = h264.packetize(au, self.mtu)
        out = []
        for i, p in enumerate(payloads):
            out.append(
                bytearray(
                    rtp.build(
                        96,
                        self.seq,
                        (self.ts + n * TICKS) & 0xFFFFFFFF,
                        self.ssrc,
                        p,
                        i == len(payloads) - 1,
                    )
                )
            )
            self.seq = (self.seq + 1) & 0xFFFF
        return out


def run(m: Merger, feeds: list[tuple[int, list[bytearray]]], now: float) -> list[bytearray]:
    """Push the packets as the feed does: a keyframe tracker per source says which packet
    starts a keyframe access unit."""
    trackers = TRACKERS.setdefault(m, {})
    out = []
    for index, pkts in feeds:
        tracker = trackers.setdefault(index, KeyframeTracker(m.fmt))
        for p in pkts:
            key = tracker.push(memoryview(p)[12:], bool(p[1] & 0x80))
            out += [pkt for pkt, _ in m.push(index, p, 12, key, now)]
    return out


TRACKERS: weakref.WeakKeyDictionary[Merger, dict[int, KeyframeTracker]] = (
    weakref.WeakKeyDictionary()
)


def check_continuous(out: list[bytearray], frames: int, ssrc: int) -> None:
    seqs = [rtp.sequence(p) for p in out]
    assert all(seq_diff(b, a) == 1 for a, b in itertools.pairwise(seqs))
    frame_ts = sorted(
        {rtp.timestamp(p) for p in out}, key=lambda t: ts_diff(t, rtp.timestamp(out[0]))
    )
    assert len(frame_ts) == frames
    assert all(ts_diff(b, a) == TICKS for a, b in itertools.pairwise(frame_ts))
    assert {rtp.ssrc(p) for p in out} == {ssrc}


def test_identical_feeds_merge_without_loss_or_repeat_across_wraparound() -> None:
    aus = access_units(60, seed=1)
    a = Recorder(1400, seq=65500, ts=0xFFFFF000, ssrc=1)  # both bases wrap during the run
    b = Recorder(900, seq=100, ts=12345, ssrc=2)
    m = Merger(h264.FORMAT, 90000, random.Random(5))
    m.last_out_seq = 65530  # and the outbound numbering wraps too
    m.last_out_ts = 0xFFFFFF00
    out = []
    now = 0.0
    for n, au in enumerate(aus):
        pa, pb = a.packets(n, au), b.packets(n, au)
        if n == 30:
            pa = pa[: len(pa) // 2]  # A dies in the middle of frame 30
        feeds = [(0, pa), (1, pb)] if n % 3 else [(1, pb), (0, pa)]  # either may be first
        if n > 30:
            feeds = [(1, pb)]
        out += run(m, feeds, now)
        now += 1 / FPS
    check_continuous(out, 60, m.ssrc)
    assert m.aligned(0) and m.aligned(1)
    # The output carries exactly the AUs, each once, whatever the packetization.
    d = h264.depacketizer()
    nals = [n for p in out for n in d.push(memoryview(p)[12:])]
    assert nals == [n for au in aus for n in au]


def test_broken_au_is_never_sent_half() -> None:
    aus = access_units(3, seed=2)
    a = Recorder(500, 0, 0, 1)
    m = Merger(h264.FORMAT, 90000, random.Random(1))
    first = a.packets(0, aus[0])
    assert run(m, [(0, first)], 0.0)  # the keyframe starts the timeline
    second = a.packets(1, aus[1])
    if len(second) > 1:
        del second[len(second) // 2]  # a lost packet inside the AU
        assert run(m, [(0, second)], 0.04) == []


def test_differently_encoded_source_is_anchored_at_its_keyframe() -> None:
    m = Merger(h264.FORMAT, 90000, random.Random(3))
    a = Recorder(1400, 10, 1000, 1)
    b = Recorder(1400, 50000, 777, 2)
    aus_a, aus_b = access_units(20, seed=3), access_units(20, seed=4)  # other content
    out = []
    for n in range(5):
        out += run(m, [(0, a.packets(n, aus_a[n])), (1, b.packets(n, aus_b[n]))], n / FPS)
    assert not m.aligned(1)  # never matches: different encoding
    last_seq, last_ts = rtp.sequence(out[-1]), rtp.timestamp(out[-1])
    m.anchor(1)
    switched = []
    for n in range(5, 15):  # A is gone; B's next keyframe is frame 10
        switched += run(m, [(1, b.packets(n, aus_b[n]))], n / FPS)
    assert switched and seq_diff(rtp.sequence(switched[0]), last_seq) == 1
    assert ts_diff(rtp.timestamp(switched[0]), last_ts) == 6 * TICKS  # wall time since frame 4
    d = h264.depacketizer()
    first_nals = d.push(memoryview(switched[0])[12:])
    assert first_nals[0][0] & 0x1F == 7  # starts with SPS: decodable at once
    assert not m.aligned(0)
