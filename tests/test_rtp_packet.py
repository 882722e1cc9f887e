"""RTP header parsing, exact rejections, in-place rewrite, wraparound helpers."""

from __future__ import annotations

import struct

import pytest

from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.seqnum import seq_add, seq_diff, seq_lt, ts_add, ts_diff, ts_lt

# Version 2, extension, 1 CSRC, marker, PT 96, seq 65535, ts, ssrc, csrc, ext (1 word), payload.
FULL = (
    struct.pack(">BBHII", 0x91, 0xE0, 0xFFFF, 0xFFFFFFF0, 0xDEADBEEF)
    + struct.pack(">I", 0x01020304)
    + struct.pack(">HH", 0xABAC, 1)
    + b"\x00\x00\x00\x01"
    + b"\x65payload"
)


def test_parse_full_header() -> None:
    h = rtp.parse_header(FULL)
    assert (h.version, h.extension, h.csrc_count, h.marker) == (2, True, 1, True)
    assert (h.payload_type, h.sequence, h.timestamp, h.ssrc) == (96, 0xFFFF, 0xFFFFFFF0, 0xDEADBEEF)
    assert FULL[h.payload_offset : h.payload_end] == b"\x65payload"
    assert rtp.payload_span(FULL) == (h.payload_offset, h.payload_end)
    assert (rtp.sequence(FULL), rtp.timestamp(FULL), rtp.ssrc(FULL)) == (
        0xFFFF,
        0xFFFFFFF0,
        0xDEADBEEF,
    )
    assert rtp.marker(FULL) and rtp.payload_type(FULL) == 96


def test_truncations_have_exact_messages() -> None:
    for cut in range(len(FULL)):
        data = FULL[:cut]
        if cut < 12:
            msg = "RTP packet too short"
        elif cut < 16:
            msg = "RTP CSRC list truncated"
        elif cut < 24:
            msg = "RTP header extension truncated"
        else:
            rtp.parse_header(data)
            continue
        with pytest.raises(ValueError, match=msg):
            rtp.parse_header(data)


def test_bad_version_and_padding() -> None:
    with pytest.raises(ValueError, match="RTP version must be 2"):
        rtp.parse_header(b"\x40" + FULL[1:])
    padded = bytearray(rtp.build(96, 1, 2, 3, b"ab"))
    padded[0] |= 0x20
    padded += b"\x00\x09"  # claims 9 bytes of padding in a 4-byte payload
    with pytest.raises(ValueError, match="RTP padding larger than payload"):
        rtp.parse_header(padded)


def test_rewrite_in_place_keeps_everything_else() -> None:
    buf = bytearray(FULL)
    rtp.rewrite(buf, ssrc=0x11223344, sequence=0x10000 + 5, timestamp=7, payload_type=97)
    h = rtp.parse_header(buf)
    assert (h.ssrc, h.sequence, h.timestamp, h.payload_type, h.marker) == (
        0x11223344,
        5,
        7,
        97,
        True,
    )
    assert buf[12:] == FULL[12:]


def test_build_roundtrip() -> None:
    pkt = rtp.build(8, 10, 20, 30, b"xyz", marker=True)
    h = rtp.parse_header(pkt)
    assert (h.payload_type, h.sequence, h.timestamp, h.ssrc, h.marker) == (8, 10, 20, 30, True)
    assert pkt[h.payload_offset :] == b"xyz"


def test_wraparound_helpers() -> None:
    assert seq_add(65535, 1) == 0 and seq_add(0, -1) == 65535
    assert seq_diff(0, 65535) == 1 and seq_diff(65535, 0) == -1
    assert seq_lt(65530, 3) and not seq_lt(3, 65530)
    assert ts_add(0xFFFFFFFF, 2) == 1
    assert ts_diff(1, 0xFFFFFFFF) == 2 and ts_diff(0xFFFFFFFF, 1) == -2
    assert ts_lt(0xFFFFFF00, 5)
