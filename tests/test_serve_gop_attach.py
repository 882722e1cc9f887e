"""What a client joining the fan-out gets: the GOP since the last keyframe, as it was sent
(a check for any other way of keeping the GOP's bytes)."""

from __future__ import annotations

import random
from collections.abc import Iterable

from rmfproxy.rtp import packet as rtp
from rmfproxy.serve.fanout import Fanout
from rmfproxy.serve.gop import GopBuffer


class _Sink:
    """A client that records what the fan-out gives it."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes, bool]] = []
        self.packets_sent = 0
        self.packets_dropped = 0

    def deliver_many(self, track: int, packets: Iterable[tuple[bytes | bytearray, bool]]) -> None:
        self.got += [(track, bytes(pkt), key) for pkt, key in packets]

    def deliver_rtcp(self, track: int, packet: bytes) -> None:
        pass

    def close(self, reason: object) -> None:
        pass


def _packet(rng: random.Random, seq: int, key: bool) -> bytes:
    """An outbound RTP packet of random size and payload (a keyframe's starts with IDR)."""
    size = rng.randrange(20, 1400)
    head = b"\x65" if key else b"\x41"
    return rtp.build(96, seq & 0xFFFF, seq * 3600, 7, head + rng.randbytes(size), True)


def test_a_joining_client_gets_the_gop_since_the_last_keyframe_as_sent() -> None:
    # Many GOPs of different sizes through one fan-out: a client that attaches gets
    # exactly the packets sent since the last keyframe, in order, the first flagged.
    rng = random.Random(5)
    fan = Fanout(2, 0)
    sent: list[tuple[int, bytes, bool]] = []
    seq = 0
    for gop_packets in (300, 3, 120, 1, 500, 40):
        for i in range(gop_packets):
            seq += 1
            key = i == 0
            track = 1 if i % 7 == 3 else 0  # audio among the video
            pkt = _packet(rng, seq, key)
            if key:
                sent = []
            sent.append((track, bytes(pkt), key))
            fan.send_rtp(track, pkt, key, now=seq / 100)
        sink = _Sink()
        fan.attach(sink)  # type: ignore[arg-type]
        assert sink.got == [(t, p, i == 0) for i, (t, p, _) in enumerate(sent)]
        fan.detach(sink)  # type: ignore[arg-type]


def test_the_start_points_come_from_the_buffered_gop() -> None:
    fan = Fanout(1, 0)
    rng = random.Random(1)
    for seq in range(1, 10):
        fan.send_rtp(0, _packet(rng, seq, seq in (1, 5)), seq in (1, 5), now=0.0)
    assert fan.start_points()[0].sequence == 5  # the last keyframe's, not the next packet's


def test_a_gop_that_fills_the_bound_exactly_is_kept() -> None:
    gop = GopBuffer(limit_bytes=3000, limit_seconds=10)
    gop.push(0, b"K" * 1000, True)
    gop.push(0, b"d" * 2000, False)
    assert gop.valid and gop.packets == [(0, b"K" * 1000), (0, b"d" * 2000)]
    gop.push(0, b"d", False)
    assert not gop.valid and gop.packets == []
    gop.push(0, b"k" * 3000, True)
    assert gop.packets == [(0, b"k" * 3000)]
