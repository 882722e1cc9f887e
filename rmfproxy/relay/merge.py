"""Hitless merging of identical video feeds, without I/O (the caller passes ``now``).

Two recorders relaying one camera without transcoding carry the same coded
access units, each with its own SSRC, sequence and timestamp bases and
possibly its own packetization. This module builds one outbound video stream
from all of them, in the spirit of SMPTE ST 2022-7:

* Each source's packets are assembled into access units (AUs). An AU counts
  only when complete: contiguous sequence numbers from the packet after a
  marker bit to the next marker bit (RFC 6184 §5.1, RFC 7798 §4.1). A source
  that dies mid-frame never emits half a frame.
* Every complete AU gets a fingerprint that does not depend on packetization:
  CRC-32 and length of its NAL unit bytes with the RTP aggregation and
  fragmentation headers stripped.
* The outbound timeline belongs to the proxy. A source is *aligned* when one
  of its AUs has the fingerprint of an AU already sent: its timestamp offset
  onto the outbound timeline is then known. Every AU is taken from whichever
  aligned source completes it first; later copies are dropped. So a source
  that closes or freezes costs at most the time until the other's copy of the
  next AU arrives: no frame lost, none repeated.
* A source that does not align (encoded differently) is only ever brought in
  by :meth:`Merger.anchor`, which takes effect on its next keyframe AU and
  re-anchors the timeline there (sequence +1, timestamp advanced by the wall
  time that passed); the other sources must then align again.

The merger owns the outbound SSRC, sequence numbers and timestamps of the
video track.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

from rmfproxy.rtp.nal import NalFormat

_SEQ_TS_SSRC = struct.Struct(">HII")
HISTORY = 256
"""Fingerprints of sent AUs kept for alignment (about 10 s at 25 fps)."""
MAX_AU_PACKETS = 2048


@dataclass
class _Assembly:
    """One source's access unit in progress."""

    ts: int
    packets: list[bytearray] = field(default_factory=list)
    next_seq: int = 0
    complete_start: bool = False
    broken: bool = False
    keyframe: bool = False
    crc: int = 0
    length: int = 0


@dataclass
class _Source:
    offset: int | None = None
    """Source timestamp + offset = outbound timestamp, once aligned."""
    assembly: _Assembly | None = None
    after_marker: bool = False
    last_seq: int | None = None
    anchor_pending: bool = False
    aus_sent: int = 0
    aus_dropped: int = 0


def nal_chunks(fmt: NalFormat, payload: memoryview) -> list[memoryview]:
    """The NAL unit bytes carried by one RTP payload, aggregation/fragmentation headers stripped."""
    hl = fmt.header_len
    n = len(payload)
    if n < hl:
        return []
    t = fmt.nal_type(payload)
    if t == fmt.aggregate:
        out = []
        pos = hl
        while pos + 2 <= n:
            size = (payload[pos] << 8) | payload[pos + 1]
            if size == 0 or pos + 2 + size > n:
                break
            out.append(payload[pos + 2 : pos + 2 + size])
            pos += 2 + size
        return out
    if t == fmt.fragment:
        if n <= hl + 1:
            return []
        fu = payload[hl]
        body = payload[hl + 1 :]
        if fu & 0x80:  # start: the reconstructed NAL type byte is part of the NAL
            ntype = fu & (0x1F if hl == 1 else 0x3F)
            return [memoryview(bytes([ntype])), body]
        return [body]
    return [payload]


class Merger:
    """Builds one outbound video stream from several sources carrying the same AUs."""

    def __init__(self, fmt: NalFormat, clock_rate: int, rng: random.Random | None = None) -> None:
        rng = rng or random.SystemRandom()
        self.fmt = fmt
        self.clock_rate = clock_rate
        self.ssrc = rng.getrandbits(32)
        self.last_out_seq = rng.getrandbits(16)
        self.last_out_ts = rng.getrandbits(32)
        self._last_out_wall: float | None = None
        self._sent_any = False
        self._history: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._sources: dict[int, _Source] = {}
        self.packets = 0
        self.octets = 0
        self.last_sender: int | None = None

    # sources -------------------------------------------------------------------

    def _source(self, index: int) -> _Source:
        src = self._sources.get(index)
        if src is None:
            src = _Source()
            self._sources[index] = src
        return src

    def reset_source(self, index: int) -> None:
        """A source reconnected (new SSRC and bases): it must align again."""
        self._sources[index] = _Source()

    def aligned(self, index: int) -> bool:
        """True once the source's AUs map onto the outbound timeline."""
        src = self._sources.get(index)
        return src is not None and src.offset is not None

    def anchor(self, index: int) -> None:
        """Bring in a source that does not align: at its next keyframe AU, re-anchor on it."""
        self._source(index).anchor_pending = True

    def stats(self, index: int) -> tuple[int, int]:
        """(AUs sent, AUs dropped as later copies) for a source."""
        src = self._sources.get(index)
        return (src.aus_sent, src.aus_dropped) if src else (0, 0)

    # packets -------------------------------------------------------------------

    def push(
        self, index: int, packet: bytearray, payload_offset: int, key: bool, now: float
    ) -> list[tuple[bytearray, bool]]:
        """Feed one video RTP packet; ``key``: it starts a keyframe AU (the caller's
        per-source :class:`KeyframeTracker` says so). Returns outbound packets (rewritten)
        and keyframe flags."""
        src = self._source(index)
        seq, ts, _ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        marker = bool(packet[1] & 0x80)
        payload = memoryview(packet)[payload_offset:]
        asm = src.assembly
        if asm is None or asm.ts != ts:
            # A new AU starts. It is whole only if the previous packet ended an AU.
            if src.last_seq is None:
                # A source's first packet starts a whole AU only if it begins a keyframe
                # (servers start a stream on one; anything else may be mid-frame).
                whole = key
            else:
                whole = src.after_marker and ((src.last_seq + 1) & 0xFFFF) == seq
            asm = _Assembly(ts, next_seq=seq, complete_start=whole)
            src.assembly = asm
        if seq != asm.next_seq or len(asm.packets) >= MAX_AU_PACKETS:
            asm.broken = True  # a packet of this AU is missing (or it is absurdly large)
        asm.next_seq = (seq + 1) & 0xFFFF
        src.last_seq = seq
        src.after_marker = marker
        asm.packets.append(packet)
        asm.keyframe = asm.keyframe or key
        for chunk in nal_chunks(self.fmt, payload):
            asm.crc = zlib.crc32(chunk, asm.crc)
            asm.length += len(chunk)
        if not marker:
            return []
        src.assembly = None
        if asm.broken or not asm.complete_start:
            return []
        return self._complete(index, src, asm, now)

    def _complete(
        self, index: int, src: _Source, asm: _Assembly, now: float
    ) -> list[tuple[bytearray, bool]]:
        fp = (asm.crc, asm.length)
        if src.anchor_pending and asm.keyframe:
            # Re-anchor the timeline on this source: continue seq +1, ts by wall time.
            src.anchor_pending = False
            for other, s in self._sources.items():
                if other != index:
                    s.offset = None
            self._history.clear()
            src.offset = (self._next_ts(now) - asm.ts) & 0xFFFFFFFF
        elif src.offset is None:
            sent_ts = self._history.get(fp)
            if sent_ts is None:
                if self._sent_any or not asm.keyframe:
                    return []
                # Nothing sent yet: the first keyframe AU of any source starts the timeline.
                src.offset = (self._next_ts(now) - asm.ts) & 0xFFFFFFFF
            else:
                src.offset = (sent_ts - asm.ts) & 0xFFFFFFFF
                src.aus_dropped += 1
                return []  # aligned on an AU already sent
        out_ts = (asm.ts + src.offset) & 0xFFFFFFFF
        if self._sent_any:
            d = (out_ts - self.last_out_ts) & 0xFFFFFFFF
            if d == 0 or d >= 0x80000000:
                src.aus_dropped += 1
                return []  # a later copy of an AU already sent (or older)
        return self._emit(index, src, asm, out_ts, now, fp)

    def _next_ts(self, now: float) -> int:
        if not self._sent_any or self._last_out_wall is None:
            return self.last_out_ts
        elapsed = max(1, round((now - self._last_out_wall) * self.clock_rate))
        return (self.last_out_ts + elapsed) & 0xFFFFFFFF

    def _emit(
        self, index: int, src: _Source, asm: _Assembly, out_ts: int, now: float, fp: tuple[int, int]
    ) -> list[tuple[bytearray, bool]]:
        out = []
        seq = self.last_out_seq
        first = True
        for pkt in asm.packets:
            seq = (seq + 1) & 0xFFFF
            _SEQ_TS_SSRC.pack_into(pkt, 2, seq, out_ts, self.ssrc)
            out.append((pkt, first and asm.keyframe))
            first = False
            self.octets += len(pkt) - 12
        self.packets += len(out)
        self.last_out_seq = seq
        self.last_out_ts = out_ts
        self._last_out_wall = now
        self._sent_any = True
        self._history[fp] = out_ts
        if len(self._history) > HISTORY:
            self._history.popitem(last=False)
        src.aus_sent += 1
        self.last_sender = index
        return out

    def rtp_time_at(self, now: float) -> int:
        """The outbound timestamp for wall time ``now`` (for sender reports)."""
        if self._last_out_wall is None:
            return self.last_out_ts
        return (
            self.last_out_ts + round((now - self._last_out_wall) * self.clock_rate)
        ) & 0xFFFFFFFF
