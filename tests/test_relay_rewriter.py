"""The outbound RTP numbering: one SSRC, +1 sequence across upstream changes, rising timestamps."""

from __future__ import annotations

import itertools
import random
import struct

from rmfproxy.relay.rewriter import Rewriter


def pkt(seq: int, ts: int, ssrc: int, payload: bytes = b"\x65abc") -> bytearray:
    return bytearray(struct.pack(">BBHII", 0x80, 0xE0, seq, ts, ssrc) + payload)


def fields(p: bytearray) -> tuple[int, int, int]:
    seq, ts, ssrc = struct.unpack_from(">HII", p, 2)
    return seq, ts, ssrc


def test_gaps_kept_payload_and_marker_untouched() -> None:
    rw = Rewriter(90000, random.Random(1))
    out = []
    for seq in (100, 101, 103):  # 102 lost upstream
        p = pkt(seq, 5000, 0xAAAA)
        rw.rewrite(p, 0.0)
        assert p[1] == 0xE0 and p[12:] == b"\x65abc"
        out.append(fields(p))
    assert [(s - out[0][0]) & 0xFFFF for s, _, _ in out] == [0, 1, 3]
    assert {ssrc for _, _, ssrc in out} == {rw.timeline.ssrc}


def test_reanchor_continues_sequence_and_time_across_wraparound() -> None:
    rw = Rewriter(90000, random.Random(2))
    rw.timeline.seq = 0xFFFE  # force a wrap during the switch
    rw.timeline.ts = 0xFFFFFF00
    a = pkt(7, 1000, 0x1111)
    rw.rewrite(a, 10.0)
    seq_a, ts_a, _ = fields(a)
    assert seq_a == 0xFFFF
    b = pkt(8, 1000 + 3600, 0x1111)
    rw.rewrite(b, 10.04)
    assert fields(b)[:2] == (0, (ts_a + 3600) & 0xFFFFFFFF)
    # A new upstream (other SSRC, other bases) 0.5 s later: seq +1, ts + 0.5 s of clock.
    c = pkt(40000, 123456789, 0x2222)
    rw.rewrite(c, 10.54)
    seq_c, ts_c, ssrc_c = fields(c)
    assert seq_c == 1
    assert (ts_c - ts_a - 3600) & 0xFFFFFFFF == 45000
    assert ssrc_c == rw.timeline.ssrc


def test_reanchor_never_repeats_a_timestamp() -> None:
    rw = Rewriter(90000, random.Random(3))
    a = pkt(1, 500, 1)
    rw.rewrite(a, 5.0)
    rw.reanchor()
    b = pkt(9, 77, 1)
    rw.rewrite(b, 5.0)  # same instant
    assert (fields(b)[1] - fields(a)[1]) & 0xFFFFFFFF >= 1
    assert (fields(b)[0] - fields(a)[0]) & 0xFFFF == 1


def test_rtp_time_for_sender_reports() -> None:
    rw = Rewriter(8000, random.Random(4))
    p = pkt(1, 0, 9)
    rw.rewrite(p, 100.0)
    assert rw.timeline.rtp_time_at(101.0) == (fields(p)[1] + 8000) & 0xFFFFFFFF


def test_a_timestamp_or_sequence_jump_is_a_discontinuity_not_a_jump_for_clients() -> None:
    # A recorder restarts without a reconnect (or a forged packet comes in): its numbering
    # jumps. Clients must see sequence +1 and time advancing by the wall clock.
    rw = Rewriter(8000, random.Random(3))
    out = []
    now = 0.0
    seq, ts = 10, 1000
    for i in range(30):
        if i == 10:
            ts += 0x7000_0000  # far future
        if i == 20:
            seq += 20000  # far ahead
        p = pkt(seq, ts, 0x2222)
        rw.rewrite(p, now)
        out.append(fields(p))
        seq, ts, now = seq + 1, ts + 160, now + 0.02
    seqs = [s for s, _, _ in out]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    stamps = [t for _, t, _ in out]
    steps = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)]
    assert all(0 < d <= 2 * 160 for d in steps), steps
    assert rw.jumps == 2
