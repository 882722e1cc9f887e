"""RTP fixed header (RFC 3550 §5.1): parsing, tiny hot-path accessors, in-place rewrite.

The accessors read single fields without building objects: they run for every
packet the proxy relays. :func:`parse_header` validates a whole header and is
for the edges (tests, diagnostics, the first packet of a stream).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

Buffer = bytes | bytearray | memoryview

_FIXED = struct.Struct(">BBHII")
_SEQ = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SEQ_TS_SSRC = struct.Struct(">HII")


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """A parsed RTP header and where the payload lies in the packet."""

    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload_offset: int
    payload_end: int


def parse_header(buf: Buffer) -> RtpHeader:
    """Parse and validate the header of ``buf``; ``ValueError`` names what is wrong."""
    start, end = payload_span(buf)
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(buf, 0)
    return RtpHeader(
        2,
        bool(b0 & 0x20),
        bool(b0 & 0x10),
        b0 & 0x0F,
        bool(b1 & 0x80),
        b1 & 0x7F,
        seq,
        ts,
        ssrc,
        start,
        end,
    )


def payload_span(buf: Buffer) -> tuple[int, int]:
    """``(start, end)`` of the payload: after the CSRCs and the header extension, before
    the padding (RFC 3550 §5.1, §5.3.1). ``ValueError`` names what is wrong. The one
    header walk of the project, on the hot path too: it builds nothing but the tuple."""
    n = len(buf)
    if n < 12:
        raise ValueError("RTP packet too short")
    b0 = buf[0]
    if b0 >> 6 != 2:
        raise ValueError("RTP version must be 2")
    start = 12 + 4 * (b0 & 0x0F)
    if n < start:
        raise ValueError("RTP CSRC list truncated")
    if b0 & 0x10:
        if n < start + 4:
            raise ValueError("RTP header extension truncated")
        start += 4 + 4 * ((buf[start + 2] << 8) | buf[start + 3])
        if n < start:
            raise ValueError("RTP header extension truncated")
    if b0 & 0x20:
        pad = buf[-1]
        if pad == 0 or n - pad < start:
            raise ValueError("RTP padding larger than payload")
        n -= pad
    return start, n


def marker(buf: Buffer) -> bool:
    """The marker bit (end of an access unit for video, RFC 6184 §5.1)."""
    return bool(buf[1] & 0x80)


def payload_type(buf: Buffer) -> int:
    """The payload type."""
    return buf[1] & 0x7F


def sequence(buf: Buffer) -> int:
    """The sequence number."""
    return int(_SEQ.unpack_from(buf, 2)[0])


def timestamp(buf: Buffer) -> int:
    """The RTP timestamp."""
    return int(_U32.unpack_from(buf, 4)[0])


def ssrc(buf: Buffer) -> int:
    """The synchronisation source."""
    return int(_U32.unpack_from(buf, 8)[0])


def rewrite(
    buf: bytearray, *, ssrc: int, sequence: int, timestamp: int, payload_type: int | None = None
) -> None:
    """Overwrite SSRC, sequence and timestamp (and optionally PT) in place; payload untouched."""
    _SEQ_TS_SSRC.pack_into(buf, 2, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    if payload_type is not None:
        buf[1] = (buf[1] & 0x80) | (payload_type & 0x7F)


def build(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: Buffer,
    marker: bool = False,
) -> bytes:
    """A version-2 RTP packet without CSRCs or extension."""
    b1 = (0x80 if marker else 0) | (payload_type & 0x7F)
    return _FIXED.pack(0x80, b1, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + bytes(payload)
