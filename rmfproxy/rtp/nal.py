"""What H.264 and H.265 RTP payloads share: Annex B framing, aggregation/fragmentation,
depacketizing, and finding where keyframe access units start.

The codec modules (:mod:`rmfproxy.rtp.h264`, :mod:`rmfproxy.rtp.h265`) supply a
:class:`NalFormat` saying how their NAL and payload headers are laid out
(RFC 6184 §5.7-5.8 STAP-A/FU-A; RFC 7798 §4.4.2-4.4.3 AP/FU). Only NAL
headers are read; nothing is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class NalFormat:
    """Layout of one codec's NAL units and RTP payload structures."""

    name: str
    header_len: int
    """Bytes of NAL unit header: 1 (H.264) or 2 (H.265)."""
    nal_type: Callable[[Buffer], int]
    """Type of the NAL unit (or payload structure) whose header starts the buffer."""
    aggregate: int
    """Payload type number of the aggregation packet (STAP-A / AP)."""
    fragment: int
    """Payload type number of the fragmentation unit (FU-A / FU)."""
    keyframe_types: frozenset[int]
    """NAL types that begin a random-access point: IDR/IRAP and parameter sets."""
    vcl_types: frozenset[int]
    """NAL types that carry coded slices."""
    irap_types: frozenset[int]
    """Slice types a decoder can start at: H.264 IDR, H.265 IRAP (BLA/IDR/CRA)."""
    param_types: tuple[int, ...]
    """Parameter set NAL types, in the order a decoder needs them (VPS, SPS, PPS)."""
    leading_skip_types: frozenset[int]
    """Leading pictures that cannot be decoded when the stream starts at their
    random-access point (H.265 RASL, ITU-T H.265 §8.1.3); empty for H.264."""
    make_header: Callable[[Buffer, int], bytes]
    """Build a payload header of ``type`` from the first NAL's header (keeps F/NRI/layer/tid)."""


def split_annexb(data: Buffer) -> list[bytes]:
    """NAL units of an Annex B byte stream, without start codes (3- or 4-byte)."""
    data = bytes(data)
    nals = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j < 0 else j
        nal = data[start:end]
        if j >= 0 and nal.endswith(b"\x00"):
            nal = nal.rstrip(b"\x00")  # the next start code was 4 bytes (or trailing zeros)
        if nal:
            nals.append(nal)
        i = j
    return nals


def to_annexb(nals: list[bytes]) -> bytes:
    """Join NAL units with 4-byte start codes."""
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def packetize(fmt: NalFormat, nals: list[bytes], mtu: int = 1400) -> list[bytes]:
    """RTP payloads for one access unit: small NALs aggregated, large ones fragmented.

    The caller sets the marker bit on the packet of the last payload.
    """
    hl = fmt.header_len
    out: list[bytes] = []
    group: list[bytes] = []
    group_size = hl

    def flush() -> None:
        nonlocal group, group_size
        if len(group) == 1:
            out.append(group[0])
        elif group:
            body = b"".join(len(n).to_bytes(2, "big") + n for n in group)
            out.append(fmt.make_header(group[0], fmt.aggregate) + body)
        group, group_size = [], hl

    for nal in nals:
        if len(nal) < hl:
            continue  # not even a NAL header (end-of-sequence NALs are header only)
        if len(nal) > mtu:
            flush()
            head = fmt.make_header(nal, fmt.fragment)
            ntype = fmt.nal_type(nal)
            body = memoryview(nal)[hl:]
            step = mtu - len(head) - 1
            for pos in range(0, len(body), step):
                flags = (0x80 if pos == 0 else 0) | (0x40 if pos + step >= len(body) else 0)
                out.append(head + bytes([flags | ntype]) + bytes(body[pos : pos + step]))
            continue
        if group_size + 2 + len(nal) > mtu:
            flush()
        group.append(nal)
        group_size += 2 + len(nal)
    flush()
    return out


def starting_types(fmt: NalFormat, payload: Buffer) -> list[int]:
    """Types of the NAL units that begin in this payload (a FU counts only at its start)."""
    hl = fmt.header_len
    if len(payload) < hl:
        return []
    t = fmt.nal_type(payload)
    if t == fmt.aggregate:
        types = []
        pos = hl
        n = len(payload)
        while pos + 2 + hl <= n:
            size = (payload[pos] << 8) | payload[pos + 1]
            if size < hl or pos + 2 + size > n:
                break
            types.append(fmt.nal_type(payload[pos + 2 : pos + 2 + hl]))
            pos += 2 + size
        return types
    if t == fmt.fragment:
        if len(payload) <= hl:
            return []
        fu = payload[hl]
        return [fu & (0x1F if hl == 1 else 0x3F)] if fu & 0x80 else []
    return [t]


class KeyframeTracker:
    """Tells, packet by packet, where a keyframe access unit starts.

    An access unit starts after a packet with the marker bit (RFC 6184 §5.1,
    RFC 7798 §4.1). A keyframe access unit's first significant packet carries
    a parameter set or an IDR/IRAP slice; access unit delimiters and SEI before
    it are passed over, so the keyframe is marked on the packet that begins
    the parameter sets (a decoder can start there).
    """

    __slots__ = ("_fmt", "_in_prefix")

    def __init__(self, fmt: NalFormat) -> None:
        self._fmt = fmt
        self._in_prefix = True

    def push(self, payload: Buffer, marker: bool) -> bool:
        """Feed one packet's payload and marker bit; True if a keyframe starts here."""
        key = False
        if self._in_prefix:
            for t in starting_types(self._fmt, payload):
                if t in self._fmt.keyframe_types:
                    key = True
                    self._in_prefix = False
                    break
                if t in self._fmt.vcl_types:
                    self._in_prefix = False
                    break
        if marker:
            self._in_prefix = True
        return key


class Depacketizer:
    """Rebuilds NAL units from RTP payloads (single, aggregated, fragmented)."""

    def __init__(self, fmt: NalFormat, max_nal: int = 4 << 20) -> None:
        self._fmt = fmt
        self._max = max_nal
        self._frag: bytearray | None = None
        self.errors = 0

    def reset(self) -> None:
        """Forget a fragmented NAL in progress (after packet loss)."""
        self._frag = None

    def push(self, payload: Buffer) -> list[bytes]:
        """Feed one payload; returns the NAL units it completes."""
        fmt = self._fmt
        hl = fmt.header_len
        if len(payload) < hl:
            self.errors += 1
            return []
        t = fmt.nal_type(payload)
        if t == fmt.aggregate:
            nals = []
            pos, n = hl, len(payload)
            while pos + 2 <= n:
                size = (payload[pos] << 8) | payload[pos + 1]
                if size == 0 or pos + 2 + size > n:
                    self.errors += 1
                    break
                nals.append(bytes(payload[pos + 2 : pos + 2 + size]))
                pos += 2 + size
            return nals
        if t == fmt.fragment:
            if len(payload) <= hl + 1:
                self.errors += 1
                return []
            fu = payload[hl]
            start, end = fu & 0x80, fu & 0x40
            if start:
                ntype = fu & (0x1F if hl == 1 else 0x3F)
                header = _nal_header(payload, ntype, hl)
                self._frag = bytearray(header)
            elif self._frag is None:
                self.errors += 1  # lost the start: drop the rest of this NAL
                return []
            self._frag += payload[hl + 1 :]
            if len(self._frag) > self._max:
                self.errors += 1
                self._frag = None
                return []
            if end:
                nal, self._frag = bytes(self._frag), None
                return [nal]
            return []
        return [bytes(payload)]


def _nal_header(payload: Buffer, ntype: int, hl: int) -> bytes:
    if hl == 1:
        return bytes([(payload[0] & 0xE0) | ntype])
    return bytes([(payload[0] & 0x81) | (ntype << 1), payload[1]])
