"""The ONVIF replay RTP header extension (ONVIF Streaming Specification, §6.3 "RTP header
extension", in the "Playback" chapter; §6.3 since version 2.1).

A recorder replaying history stamps every RTP packet with the absolute capture time
of the frame it belongs to, so a client shows a stable wall-clock time whatever the
speed or direction of playback. The extension uses the RFC 3550 §5.3.1 header
extension with the profile-specific identifier 0xABAC and a length of 3 words::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |            0xABAC             |          length = 3           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 NTP timestamp (seconds, 32.32)                |
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |C|E|D|T|  mbz  |  CSeq (low 8) |           padding             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

- NTP timestamp: the capture time of the frame (RFC 5905 format, seconds since 1900).
- C (clean point): the packet belongs to a frame a decoder can start at (a keyframe).
- E (end of contiguous section): the last frame before a gap in the recording.
- D (discontinuity): the first frame after a gap (or after a seek).
- T (terminal): the last packet of the requested range.
- CSeq: the low byte of the CSeq of the PLAY request this data answers, so a client
  that seeks can tell data of the new request from data still in flight.

The spec allows a recorder to put other extension data after these three words (the
length is then larger); :func:`parse_replay_extension` accepts that, and reads the
first three words. No I/O here, as everywhere under ``rtp/``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rmfproxy.rtp.rtcp import ntp_from_unix, unix_from_ntp

PROFILE_ID = 0xABAC
"""The profile-specific extension identifier of the ONVIF replay extension."""
LENGTH_WORDS = 3
"""Its length in 32-bit words, after the 4-byte extension header."""
EXTENSION_BYTES = 4 + 4 * LENGTH_WORDS

FLAG_C = 0x80
FLAG_E = 0x40
FLAG_D = 0x20
FLAG_T = 0x10
_MBZ = 0x0F

_EXT = struct.Struct(">HHQBBH")


@dataclass(frozen=True, slots=True)
class ReplayExtension:
    """The fields of one packet's ONVIF replay extension."""

    ntp: int
    """64-bit NTP timestamp (32.32 since 1900) of the frame's capture time."""
    clean: bool
    """C: the frame is a clean point (a decoder can start here)."""
    end: bool
    """E: the last frame before a gap in the recording."""
    discontinuity: bool
    """D: the first frame after a gap."""
    terminal: bool
    """T: the last packet of the requested range."""
    cseq: int
    """Low 8 bits of the CSeq of the PLAY request this packet answers."""

    @property
    def unix_time(self) -> float:
        """The capture time as Unix seconds."""
        return unix_from_ntp(self.ntp)


def build_replay_extension(
    ntp_seconds: float,
    *,
    clean: bool,
    end: bool,
    discontinuity: bool,
    terminal: bool,
    cseq: int,
) -> bytes:
    """The 16 bytes of the extension (header included) for capture time ``ntp_seconds``.

    ``ntp_seconds`` is Unix time in seconds (the NTP conversion is done here, as
    :func:`rmfproxy.rtp.rtcp.ntp_from_unix` does for sender reports); ``cseq`` is the
    PLAY request's CSeq, of which the low 8 bits are sent.
    """
    if not ntp_seconds >= 0:  # also refuses NaN
        raise ValueError("replay extension time must be a non-negative Unix time")
    if cseq < 0:
        raise ValueError("replay extension CSeq must not be negative")
    flags = (
        (FLAG_C if clean else 0)
        | (FLAG_E if end else 0)
        | (FLAG_D if discontinuity else 0)
        | (FLAG_T if terminal else 0)
    )
    return _EXT.pack(PROFILE_ID, LENGTH_WORDS, ntp_from_unix(ntp_seconds), flags, cseq & 0xFF, 0)


def _extension_offset(packet: bytes | bytearray | memoryview) -> int | None:
    """Offset of the header extension of ``packet``; None without one. ValueError if the
    fixed header or the CSRC list does not fit."""
    if len(packet) < 12:
        raise ValueError("RTP packet too short for a header")
    b0 = packet[0]
    if b0 >> 6 != 2:
        raise ValueError("RTP version must be 2")
    offset = 12 + 4 * (b0 & 0x0F)
    if len(packet) < offset:
        raise ValueError("RTP CSRC list truncated")
    return offset if b0 & 0x10 else None


def parse_replay_extension(packet: bytes | bytearray | memoryview) -> ReplayExtension | None:
    """The replay extension of an RTP packet, or None if it carries another one or none.

    ``ValueError`` (with its own message) for a malformed packet: a truncated fixed
    header, CSRC list or extension, a 0xABAC extension shorter than 3 words, or mbz bits
    set.
    """
    offset = _extension_offset(packet)
    if offset is None:
        return None
    if len(packet) < offset + 4:
        raise ValueError("RTP header extension header truncated")
    profile, words = struct.unpack_from(">HH", packet, offset)
    if len(packet) < offset + 4 + 4 * words:
        raise ValueError("RTP header extension truncated")
    if profile != PROFILE_ID:
        return None
    if words < LENGTH_WORDS:
        raise ValueError(f"ONVIF replay extension needs {LENGTH_WORDS} words, has {words}")
    _, _, ntp, flags, cseq, _pad = _EXT.unpack_from(packet, offset)
    if flags & _MBZ:
        raise ValueError("ONVIF replay extension has must-be-zero bits set")
    return ReplayExtension(
        ntp=ntp,
        clean=bool(flags & FLAG_C),
        end=bool(flags & FLAG_E),
        discontinuity=bool(flags & FLAG_D),
        terminal=bool(flags & FLAG_T),
        cseq=cseq,
    )


def add_extension(packet: bytes | bytearray | memoryview, ext: bytes) -> bytes:
    """``packet`` with the header extension ``ext`` (e.g. :func:`build_replay_extension`)
    inserted after its CSRC list and the X bit set; everything else kept byte for byte.

    ``ValueError`` if the packet already has an extension (RFC 3550 §5.3.1 allows one),
    if its header does not fit, or if ``ext`` is not a well-formed extension (4-byte
    header whose length matches the words that follow).
    """
    if len(ext) < 4 or len(ext) % 4:
        raise ValueError("header extension must be a 4-byte header plus whole 32-bit words")
    if int.from_bytes(ext[2:4], "big") * 4 != len(ext) - 4:
        raise ValueError("header extension length field does not match its data")
    if _extension_offset(packet) is not None:
        raise ValueError("RTP packet already has a header extension")
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x20:
        pad = packet[-1]
        if pad == 0 or len(packet) - pad < offset:
            raise ValueError("RTP padding larger than payload")
    return bytes([packet[0] | 0x10]) + bytes(packet[1:offset]) + bytes(ext) + bytes(packet[offset:])
