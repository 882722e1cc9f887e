"""Outbound RTP numbering for one client-facing track (no I/O, caller passes ``now``).

The proxy owns the SSRC, sequence numbers and timestamps clients see
(RFC 3550 §5.1, §8). Incoming packets are mapped with two offsets; when the
upstream changes (a reconnect brings a new SSRC and new bases, or a switch to
another source), :meth:`Rewriter.reanchor` picks offsets so that the next
packet continues the client's sequence at +1 and its timestamp advances by
the wall-clock time elapsed since the last one: the client sees one stream.
Gaps inside one upstream session are kept, so a client sees real loss. A jump
beyond any loss (sequence more than ``MAX_SEQ_JUMP`` ahead or any way back by more
than ``MAX_MISORDER``, timestamp more than ``MAX_TS_JUMP`` seconds away from the
wall-clock expectation: a recorder restart without reconnect, a clock step, a
forged packet) is a discontinuity of that upstream: the rewriter re-anchors on it
as on a switch, instead of passing a jump to every client.
"""

from __future__ import annotations

import random
import struct

from rmfproxy.relay.timeline import Timeline
from rmfproxy.rtp.seqnum import seq_add, seq_diff, ts_diff

_SEQ_TS_SSRC = struct.Struct(">HII")
MAX_SEQ_JUMP = 3000
MAX_MISORDER = 100
"""RFC 3550 §A.1 bounds: a larger sequence jump is not packet loss or reordering."""
MAX_TS_JUMP = 5.0
"""Seconds a timestamp may stray from the wall-clock expectation before it is a jump."""


class Rewriter:
    """Maps one upstream RTP stream after another onto one continuous outbound stream."""

    __slots__ = (
        "_anchor_pending",
        "_last_in_seq",
        "_last_in_ts",
        "_seq_off",
        "_ts_off",
        "clock_rate",
        "jumps",
        "timeline",
        "upstream_ssrc",
    )

    def __init__(self, clock_rate: int, rng: random.Random | None = None) -> None:
        self.clock_rate = clock_rate
        self.timeline = Timeline(clock_rate, rng or random.SystemRandom())
        """The outbound SSRC, numbering and counters."""
        self._seq_off = 0
        self._ts_off = 0
        self._anchor_pending = True
        self.upstream_ssrc: int | None = None
        self._last_in_seq = 0
        self._last_in_ts = 0
        self.jumps = 0
        """Upstream discontinuities re-anchored (sequence or timestamp jumps)."""

    def reanchor(self) -> None:
        """The next packet starts a new upstream stream: continue seq +1 and ts by wall time."""
        self._anchor_pending = True

    def rewrite(self, packet: bytearray, now: float) -> None:
        """Rewrite ``packet``'s SSRC, sequence and timestamp in place."""
        in_seq, in_ts, in_ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        if self._anchor_pending or in_ssrc != self.upstream_ssrc:
            self._anchor(in_seq, in_ts, in_ssrc, now)
        elif self._jumped(in_seq, in_ts, now):
            self.jumps += 1
            self._anchor(in_seq, in_ts, in_ssrc, now)
        self._last_in_seq, self._last_in_ts = in_seq, in_ts
        self.timeline.write(
            packet, (in_seq + self._seq_off) & 0xFFFF, (in_ts + self._ts_off) & 0xFFFFFFFF, now
        )

    def _jumped(self, in_seq: int, in_ts: int, now: float) -> bool:
        d_seq = seq_diff(in_seq, self._last_in_seq)
        if d_seq > MAX_SEQ_JUMP or d_seq < -MAX_MISORDER:
            return True
        wall = self.timeline.wall
        if wall is None:
            return False
        expected = (now - wall) * self.clock_rate
        d_ts = ts_diff(in_ts, self._last_in_ts)
        return abs(d_ts - expected) > MAX_TS_JUMP * self.clock_rate

    def _anchor(self, in_seq: int, in_ts: int, in_ssrc: int, now: float) -> None:
        tl = self.timeline
        self._seq_off = (seq_add(tl.seq, 1) - in_seq) & 0xFFFF
        self._ts_off = (tl.continue_at(now) - in_ts) & 0xFFFFFFFF
        self.upstream_ssrc = in_ssrc
        self._anchor_pending = False
