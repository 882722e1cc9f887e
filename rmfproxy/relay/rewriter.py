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

from rmfproxy.rtp.seqnum import seq_add, seq_diff, ts_add, ts_diff

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
        "_last_out_arrival",
        "_seq_off",
        "_ts_off",
        "clock_rate",
        "jumps",
        "last_out_seq",
        "last_out_ts",
        "octets",
        "packets",
        "ssrc",
        "upstream_ssrc",
    )

    def __init__(self, clock_rate: int, rng: random.Random | None = None) -> None:
        rng = rng or random.SystemRandom()
        self.clock_rate = clock_rate
        self.ssrc = rng.getrandbits(32)
        # Random initial sequence and timestamp (RFC 3550 §5.1).
        self.last_out_seq = rng.getrandbits(16)
        self.last_out_ts = rng.getrandbits(32)
        self._last_out_arrival: float | None = None
        self._seq_off = 0
        self._ts_off = 0
        self._anchor_pending = True
        self.upstream_ssrc: int | None = None
        self.packets = 0
        self.octets = 0
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
        out_seq = (in_seq + self._seq_off) & 0xFFFF
        out_ts = (in_ts + self._ts_off) & 0xFFFFFFFF
        _SEQ_TS_SSRC.pack_into(packet, 2, out_seq, out_ts, self.ssrc)
        self.last_out_seq = out_seq
        if out_ts != self.last_out_ts or self._last_out_arrival is None:
            self.last_out_ts = out_ts
            self._last_out_arrival = now
        self.packets += 1
        self.octets += len(packet) - 12

    def _jumped(self, in_seq: int, in_ts: int, now: float) -> bool:
        d_seq = seq_diff(in_seq, self._last_in_seq)
        if d_seq > MAX_SEQ_JUMP or d_seq < -MAX_MISORDER:
            return True
        if self._last_out_arrival is None:
            return False
        expected = (now - self._last_out_arrival) * self.clock_rate
        d_ts = ts_diff(in_ts, self._last_in_ts)
        return abs(d_ts - expected) > MAX_TS_JUMP * self.clock_rate

    def _anchor(self, in_seq: int, in_ts: int, in_ssrc: int, now: float) -> None:
        next_seq = seq_add(self.last_out_seq, 1)
        if self._last_out_arrival is None:
            next_ts = self.last_out_ts
        else:
            # At least one tick forward, so timestamps never repeat or go back.
            elapsed = max(1, round((now - self._last_out_arrival) * self.clock_rate))
            next_ts = ts_add(self.last_out_ts, elapsed)
        self._seq_off = (next_seq - in_seq) & 0xFFFF
        self._ts_off = (next_ts - in_ts) & 0xFFFFFFFF
        self.upstream_ssrc = in_ssrc
        self._anchor_pending = False

    def rtp_time_at(self, now: float) -> int:
        """The outbound RTP timestamp corresponding to wall time ``now`` (for sender reports)."""
        if self._last_out_arrival is None:
            return self.last_out_ts
        return ts_add(self.last_out_ts, round((now - self._last_out_arrival) * self.clock_rate))
