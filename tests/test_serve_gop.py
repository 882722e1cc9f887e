"""The current-GOP buffer: starts at a keyframe, bounded in bytes and in age."""

from __future__ import annotations

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
