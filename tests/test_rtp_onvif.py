"""ONVIF replay RTP header extension (0xABAC): byte layout, round trips, exact rejections."""

from __future__ import annotations

import struct

import pytest

from rmfproxy.rtp import onvif
from rmfproxy.rtp import packet as rtp

# 2026-11-26T10:15:00.5Z as Unix time, and its NTP form (seconds since 1900, 32.32).
T = 1795601700.5
NTP = ((1795601700 + 2208988800) << 32) | 0x80000000

# Hand-built: 0xABAC, 3 words, NTP, flags C|D (0x80|0x20), CSeq 0x07, 2 padding bytes.
EXAMPLE = bytes.fromhex("abac0003") + NTP.to_bytes(8, "big") + bytes([0xA0, 0x07, 0, 0])

# Version 2, 1 CSRC, marker, PT 96, seq 7, ts 1000, SSRC, CSRC, payload.
PLAIN = (
    struct.pack(">BBHII", 0x81, 0xE0, 7, 1000, 0xDEADBEEF)
    + struct.pack(">I", 0x01020304)
    + b"\x65payload"
)


def test_build_matches_hand_built_example() -> None:
    ext = onvif.build_replay_extension(
        T, clean=True, end=False, discontinuity=True, terminal=False, cseq=0x107
    )
    assert ext == EXAMPLE  # CSeq 0x107 -> low byte 0x07


@pytest.mark.parametrize(
    ("flags", "byte"),
    [
        ((True, False, False, False), 0x80),
        ((False, True, False, False), 0x40),
        ((False, False, True, False), 0x20),
        ((False, False, False, True), 0x10),
        ((True, True, True, True), 0xF0),
        ((False, False, False, False), 0x00),
    ],
)
def test_flag_bits(flags: tuple[bool, bool, bool, bool], byte: int) -> None:
    c, e, d, t = flags
    ext = onvif.build_replay_extension(T, clean=c, end=e, discontinuity=d, terminal=t, cseq=3)
    assert ext[12] == byte and ext[13] == 3 and ext[14:] == b"\0\0"
    parsed = onvif.parse_replay_extension(onvif.add_extension(PLAIN, ext))
    assert parsed is not None
    assert (parsed.clean, parsed.end, parsed.discontinuity, parsed.terminal) == flags


def test_add_extension_keeps_csrc_and_payload_and_round_trips() -> None:
    ext = onvif.build_replay_extension(
        T, clean=False, end=True, discontinuity=False, terminal=True, cseq=255
    )
    pkt = onvif.add_extension(PLAIN, ext)
    assert pkt == bytes([0x91]) + PLAIN[1:16] + ext + b"\x65payload"
    h = rtp.parse_header(pkt)
    assert h.extension and h.csrc_count == 1 and h.marker
    assert (h.sequence, h.timestamp, h.ssrc) == (7, 1000, 0xDEADBEEF)
    assert pkt[h.payload_offset : h.payload_end] == b"\x65payload"
    parsed = onvif.parse_replay_extension(pkt)
    assert parsed == onvif.ReplayExtension(NTP, False, True, False, True, 255)
    assert parsed.unix_time == T


def test_time_round_trip_sub_millisecond() -> None:
    for t in (0.0, 1.0 / 25, 1795601700.04, 1795601799.96, 2e9):
        ext = onvif.build_replay_extension(
            t, clean=True, end=False, discontinuity=False, terminal=False, cseq=1
        )
        parsed = onvif.parse_replay_extension(onvif.add_extension(PLAIN, ext))
        assert parsed is not None and abs(parsed.unix_time - t) < 1e-6


def test_other_extension_or_none_is_not_replay() -> None:
    assert onvif.parse_replay_extension(PLAIN) is None
    other = onvif.add_extension(PLAIN, bytes.fromhex("bede0001") + b"\x10\x01\x00\x00")
    assert onvif.parse_replay_extension(other) is None


def test_longer_extension_reads_first_three_words() -> None:
    # The spec lets a recorder append its own data after the three words.
    longer = bytes.fromhex("abac0004") + EXAMPLE[4:] + b"\x01\x02\x03\x04"
    parsed = onvif.parse_replay_extension(onvif.add_extension(PLAIN, longer))
    assert parsed is not None and parsed.ntp == NTP and parsed.clean and parsed.cseq == 7


def test_padding_packet() -> None:
    padded = bytes([PLAIN[0] | 0x20]) + PLAIN[1:] + b"\x00\x00\x03"
    pkt = onvif.add_extension(padded, EXAMPLE)
    h = rtp.parse_header(pkt)
    assert pkt[h.payload_offset : h.payload_end] == b"\x65payload"
    assert onvif.parse_replay_extension(pkt) is not None


def test_truncation_at_every_length() -> None:
    pkt = onvif.add_extension(PLAIN, EXAMPLE)
    messages = {
        **dict.fromkeys(range(12), "RTP packet too short for a header"),
        **dict.fromkeys(range(12, 16), "RTP CSRC list truncated"),
        **dict.fromkeys(range(16, 20), "RTP header extension header truncated"),
        **dict.fromkeys(range(20, 32), "RTP header extension truncated"),
    }
    for n in range(len(pkt)):
        cut = pkt[:n]
        if n in messages:
            with pytest.raises(ValueError, match=f"^{messages[n]}$"):
                onvif.parse_replay_extension(cut)
        else:
            assert onvif.parse_replay_extension(cut) is not None  # payload cut: still parses


def test_malformed_rejections() -> None:
    with pytest.raises(ValueError, match=r"^RTP version must be 2$"):
        onvif.parse_replay_extension(b"\x50" + onvif.add_extension(PLAIN, EXAMPLE)[1:])
    short = onvif.add_extension(PLAIN, bytes.fromhex("abac0002") + EXAMPLE[4:12])
    with pytest.raises(ValueError, match=r"^ONVIF replay extension needs 3 words, has 2$"):
        onvif.parse_replay_extension(short)
    mbz = onvif.add_extension(PLAIN, EXAMPLE[:12] + b"\xa1" + EXAMPLE[13:])
    with pytest.raises(ValueError, match="must-be-zero"):
        onvif.parse_replay_extension(mbz)
    with pytest.raises(ValueError, match="already has a header extension"):
        onvif.add_extension(onvif.add_extension(PLAIN, EXAMPLE), EXAMPLE)
    with pytest.raises(ValueError, match="whole 32-bit words"):
        onvif.add_extension(PLAIN, EXAMPLE[:-1])
    with pytest.raises(ValueError, match="length field does not match"):
        onvif.add_extension(PLAIN, bytes.fromhex("abac0002") + EXAMPLE[4:])
    with pytest.raises(ValueError, match=r"^RTP packet too short for a header$"):
        onvif.add_extension(PLAIN[:11], EXAMPLE)
    with pytest.raises(ValueError, match=r"^RTP CSRC list truncated$"):
        onvif.add_extension(PLAIN[:13], EXAMPLE)
    with pytest.raises(ValueError, match="padding larger"):
        onvif.add_extension(bytes([PLAIN[0] | 0x20]) + PLAIN[1:-1] + b"\xff", EXAMPLE)
    with pytest.raises(ValueError, match="non-negative"):
        onvif.build_replay_extension(
            -1.0, clean=False, end=False, discontinuity=False, terminal=False, cseq=1
        )
    with pytest.raises(ValueError, match="non-negative"):
        onvif.build_replay_extension(
            float("nan"), clean=False, end=False, discontinuity=False, terminal=False, cseq=1
        )
    with pytest.raises(ValueError, match="CSeq must not be negative"):
        onvif.build_replay_extension(
            T, clean=False, end=False, discontinuity=False, terminal=False, cseq=-1
        )
