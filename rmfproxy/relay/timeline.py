"""The outbound numbering of one client-facing track (no I/O, the caller passes ``now``).

The proxy owns the SSRC, sequence numbers and timestamps clients see (RFC 3550
§5.1, §8), whichever source a packet came from. Both producers of outbound
packets, :class:`rmfproxy.relay.rewriter.Rewriter` (packet by packet) and
:class:`rmfproxy.relay.merge.Merger` (access unit by access unit), decide *which*
sequence number and timestamp a packet gets; this object writes them, remembers
the last ones and the wall time of the last timestamp, and counts what went out
for the sender reports. Kept in one place so that "continue the stream by the wall
time that passed" and "the RTP time of now" mean the same on every track.
"""

from __future__ import annotations

import random
import struct

_SEQ_TS_SSRC = struct.Struct(">HII")
_M32 = 0xFFFFFFFF


class Timeline:
    """One outbound RTP stream's SSRC, last sequence number and timestamp, and counters."""

    __slots__ = ("clock_rate", "octets", "packets", "seq", "ssrc", "ts", "wall")

    def __init__(self, clock_rate: int, rng: random.Random) -> None:
        self.clock_rate = clock_rate
        self.ssrc = rng.getrandbits(32)
        # Random initial sequence number and timestamp (RFC 3550 §5.1).
        self.seq = rng.getrandbits(16)
        """The last sequence number sent."""
        self.ts = rng.getrandbits(32)
        """The last timestamp sent."""
        self.wall: float | None = None
        """When the last timestamp was first sent (caller's clock); None before any packet."""
        self.packets = 0
        self.octets = 0
        """Payload octets sent (RTP header excluded), for sender reports."""

    def continue_at(self, now: float) -> int:
        """The timestamp a new upstream continues at, sent at ``now``: the last one advanced by
        the wall time since it went out, at least one tick (timestamps never repeat or go
        back); the current one before anything was sent."""
        if self.wall is None:
            return self.ts
        return (self.ts + max(1, round((now - self.wall) * self.clock_rate))) & _M32

    def rtp_time_at(self, now: float) -> int:
        """The outbound timestamp corresponding to wall time ``now`` (for sender reports)."""
        if self.wall is None:
            return self.ts
        return (self.ts + round((now - self.wall) * self.clock_rate)) & _M32

    def write(self, packet: bytearray, seq: int, ts: int, now: float) -> None:
        """Stamp one packet with ``seq``, ``ts`` and the SSRC, in place, and count it."""
        _SEQ_TS_SSRC.pack_into(packet, 2, seq, ts, self.ssrc)
        self.seq = seq
        if ts != self.ts or self.wall is None:
            self.ts = ts
            self.wall = now
        self.packets += 1
        self.octets += len(packet) - 12

    def write_unit(self, packets: list[bytearray], ts: int, now: float) -> None:
        """Stamp the packets of one access unit in place: consecutive sequence numbers after
        the last, timestamp ``ts``, the marker bit on the last packet only."""
        pack = _SEQ_TS_SSRC.pack_into
        ssrc = self.ssrc
        seq = self.seq
        octets = 0
        for pkt in packets:
            seq = (seq + 1) & 0xFFFF
            pack(pkt, 2, seq, ts, ssrc)
            pkt[1] &= 0x7F
            octets += len(pkt) - 12
        if packets:
            packets[-1][1] |= 0x80
        self.octets += octets
        self.packets += len(packets)
        self.seq = seq
        if ts != self.ts or self.wall is None:
            self.ts = ts
            self.wall = now
