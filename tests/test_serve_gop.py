"""The current-GOP buffer: starts at a keyframe, bounded in bytes and in age."""

from __future__ import annotations

from rmfproxy.rtp import packet as rtp
from rmfproxy.serve.fanout import Fanout
from rmfproxy.serve.gop import GopBuffer


def test_holds_packets_from_the_last_keyframe_start() -> None:
    gop = GopBuffer(limit_bytes=1000, limit_seconds=10)
    gop.push(0, b"d" * 10, False, now=0.0)
    assert not gop.valid and gop.packets == []  # nothing before the first keyframe
    gop.push(0, b"K" * 10, True, now=1.0)
    gop.push(1, b"a" * 5, False, now=1.1)
    gop.push(0, b"d" * 10, False, now=1.2)
    assert gop.valid and [t for t, _ in gop.packets] == [0, 1, 0]
    assert gop.bytes == 25 and gop.age(3.0) == 2.0
    gop.push(0, b"K" * 20, True, now=2.0)
    assert gop.packets == [(0, b"K" * 20)] and gop.bytes == 20


def test_an_oversized_gop_is_dropped_until_the_next_keyframe() -> None:
    gop = GopBuffer(limit_bytes=100, limit_seconds=10)
    gop.push(0, b"K" * 60, True, now=0.0)
    gop.push(0, b"d" * 60, False, now=0.1)
    assert not gop.valid and gop.bytes == 0 and gop.age(0.2) is None
    gop.push(0, b"d" * 10, False, now=0.2)
    assert gop.packets == []
    gop.push(0, b"K" * 10, True, now=0.3)
    assert gop.valid and gop.bytes == 10


def test_a_gop_older_than_the_time_bound_is_dropped() -> None:
    gop = GopBuffer(limit_bytes=1 << 20, limit_seconds=2.0)
    gop.push(0, b"K", True, now=0.0)
    gop.push(0, b"d", False, now=1.9)
    assert gop.valid
    gop.push(0, b"d", False, now=2.1)
    assert not gop.valid and gop.packets == []


def test_the_fanouts_gop_ages_on_the_callers_clock() -> None:
    # The fan-out's GOP (what a joining client gets first) is bounded in age too: a
    # camera whose keyframes stopped must not hand new clients a minute-old picture.
    fan = Fanout(1, 0)
    key = rtp.build(96, 1, 0, 7, b"\x65" + b"k" * 20, True)
    delta = rtp.build(96, 2, 3600, 7, b"\x41" + b"d" * 20, True)
    fan.send_rtp(0, key, True, now=100.0)
    fan.send_rtp(0, delta, False, now=100.0 + fan.gop.limit_seconds - 1)
    assert fan.gop.valid and fan.gop.age(100.0 + fan.gop.limit_seconds - 1) is not None
    fan.send_rtp(0, delta, False, now=100.0 + fan.gop.limit_seconds + 1)
    assert not fan.gop.valid


def test_a_sources_buffer_keeps_only_the_keyframe_unit_but_tracks_the_whole_gop() -> None:
    gop = GopBuffer(limit_bytes=1000, limit_seconds=10, first_unit_only=True)
    key = [bytearray(b"P" * 10), bytearray(b"K" * 30)]
    gop.push_unit(0, [b"d" * 10], False, now=0.0)
    assert not gop.valid  # nothing before the first keyframe
    gop.push_unit(0, key, True, now=1.0)
    gop.push(1, b"a" * 5, False, now=1.1)
    gop.push_unit(0, [b"d" * 20, b"d" * 20], False, now=1.2)
    assert gop.packets == [(0, key[0]), (0, key[1])]
    assert gop.packets[1][1] is key[1]  # shared, not copied
    assert gop.valid and gop.bytes == 85 and gop.age(2.0) == 1.0
    gop.push_unit(0, [b"d" * 950], False, now=1.3)  # past the byte bound: dropped
    assert not gop.valid and gop.packets == [] and gop.bytes == 0
    gop.push_unit(0, [b"K" * 7], True, now=2.0)
    assert gop.packets == [(0, b"K" * 7)] and gop.bytes == 7


def test_units_and_packets_fill_a_full_buffer_alike() -> None:
    by_unit, by_packet = GopBuffer(), GopBuffer()
    units = [([b"K" * 9, b"k" * 3], True), ([b"d" * 4], False), ([b"d", b"e"], False)]
    for pkts, key in units:
        by_unit.push_unit(2, pkts, key, now=1.0)
        for i, p in enumerate(pkts):
            by_packet.push(2, p, key and i == 0, now=1.0)
    assert by_unit.packets == by_packet.packets and by_unit.bytes == by_packet.bytes == 18
