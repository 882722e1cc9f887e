"""The outbound numbering shared by the rewriter and the merger."""

from __future__ import annotations

import random
import struct

from rmfproxy.relay.timeline import Timeline


def _pkt(marker: bool = False, payload: bytes = b"xyz") -> bytearray:
    return bytearray(struct.pack(">BBHII", 0x80, 96 | (0x80 if marker else 0), 1, 2, 3) + payload)


def _seq_ts_ssrc(pkt: bytearray) -> tuple[int, int, int]:
    return struct.unpack_from(">HII", pkt, 2)


def test_continue_at_advances_by_wall_time_and_never_repeats() -> None:
    tl = Timeline(90000, random.Random(1))
    first = tl.ts
    assert tl.continue_at(5.0) == first  # nothing sent yet: the random start
    tl.write(_pkt(), 10, first, now=1.0)
    assert tl.continue_at(1.5) == (first + 45000) & 0xFFFFFFFF
    assert tl.continue_at(1.0) == (first + 1) & 0xFFFFFFFF  # at least one tick
    assert tl.rtp_time_at(1.0) == first  # a sender report may say "no time passed"


def test_write_keeps_the_wall_time_of_a_timestamp_first_sent() -> None:
    tl = Timeline(90000, random.Random(2))
    tl.write(_pkt(), 1, 1000, now=1.0)
    tl.write(_pkt(), 2, 1000, now=1.2)  # same picture, later packet
    assert tl.wall == 1.0 and tl.seq == 2
    tl.write(_pkt(), 3, 2000, now=1.3)
    assert tl.wall == 1.3 and tl.ts == 2000
    assert tl.packets == 3 and tl.octets == 9


def test_write_unit_numbers_consecutively_and_marks_only_the_end() -> None:
    tl = Timeline(90000, random.Random(3))
    tl.seq = 0xFFFE  # wraps inside the unit
    pkts = [_pkt(marker=True), _pkt(), _pkt(marker=False)]
    tl.write_unit(pkts, 0x1234, now=2.0)
    assert [_seq_ts_ssrc(p) for p in pkts] == [
        (0xFFFF, 0x1234, tl.ssrc),
        (0, 0x1234, tl.ssrc),
        (1, 0x1234, tl.ssrc),
    ]
    assert [bool(p[1] & 0x80) for p in pkts] == [False, False, True]
    assert [p[1] & 0x7F for p in pkts] == [96, 96, 96]
    assert tl.seq == 1 and tl.ts == 0x1234 and tl.wall == 2.0
    assert tl.packets == 3 and tl.octets == 9
