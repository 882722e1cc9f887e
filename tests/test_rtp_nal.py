"""H.264/H.265 payloads: packetize <-> depacketize round trip, NAL types, keyframe starts."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rmfproxy.rtp import h264, h265
from rmfproxy.rtp.nal import split_annexb, to_annexb


def h264_nal(t: int, size: int, rng: random.Random) -> bytes:
    return bytes([0x60 | t]) + rng.randbytes(size)


def h265_nal(t: int, size: int, rng: random.Random) -> bytes:
    return bytes([t << 1, 1]) + rng.randbytes(size)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=6), st.integers(0, 2**32))
def test_roundtrip_both_codecs(sizes: list[int], seed: int) -> None:
    rng = random.Random(seed)
    for mod, make, types in (
        (h264, h264_nal, [7, 8, 6, 5, 1]),
        (h265, h265_nal, [32, 33, 34, 39, 19, 1]),
    ):
        nals = [make(rng.choice(types), s, rng) for s in sizes]
        payloads = mod.packetize(nals, 1400)
        assert all(len(p) <= 1400 for p in payloads)
        d = mod.depacketizer()
        assert [n for p in payloads for n in d.push(p)] == nals
        assert d.errors == 0


def test_h264_keyframe_starts() -> None:
    rng = random.Random(1)
    sps, pps, idr = h264_nal(7, 20, rng), h264_nal(8, 4, rng), h264_nal(5, 3000, rng)
    payloads = h264.packetize([sps, pps, idr], 1400)
    assert payloads[0][0] & 0x1F == h264.STAP_A
    assert h264.payload_nal_types(payloads[0]) == [7, 8]
    assert [h264.starts_keyframe(p) for p in payloads] == [True, True, False, False]
    delta = h264.packetize([h264_nal(1, 3000, rng)], 1400)
    assert not any(h264.starts_keyframe(p) for p in delta)


def test_keyframe_tracker_marks_one_packet_per_keyframe_au() -> None:
    rng = random.Random(2)
    aud = bytes([0x09, 0xF0])
    tracker = h264.keyframe_tracker()
    flags = []
    for nals in ([aud, h264_nal(7, 20, rng)], [h264_nal(8, 4, rng)], [h264_nal(5, 3000, rng)]):
        for p in h264.packetize(nals, 1400):
            flags.append(tracker.push(p, False))
    end = h264.packetize([h264_nal(5, 10, rng)], 1400)[0]
    flags.append(tracker.push(end, True))  # last packet of the AU
    delta = h264.packetize([h264_nal(1, 10, rng)], 1400)[0]
    flags.append(tracker.push(delta, True))
    assert flags == [True, False, False, False, False, False, False]


def test_h265_irap_and_fu() -> None:
    rng = random.Random(3)
    payloads = h265.packetize(
        [
            h265_nal(32, 20, rng),
            h265_nal(33, 30, rng),
            h265_nal(34, 5, rng),
            h265_nal(20, 4000, rng),
        ],
        1400,
    )
    assert h265.nal_type(payloads[0]) == h265.AP
    assert h265.payload_nal_types(payloads[1]) == [20]  # FU start of the IDR
    assert h265.payload_nal_types(payloads[2]) == []  # FU continuation
    assert h265.starts_keyframe(payloads[0]) and h265.starts_keyframe(payloads[1])


def test_depacketizer_drops_fu_without_start() -> None:
    rng = random.Random(4)
    payloads = h264.packetize([h264_nal(5, 4000, rng)], 1400)
    d = h264.depacketizer()
    assert d.push(payloads[1]) == [] and d.push(payloads[2]) == []
    assert d.errors == 2


def test_annexb() -> None:
    nals = [b"\x67abc", b"\x68\x00\x00\x03d", b"\x65e"]
    assert split_annexb(to_annexb(nals)) == nals
    assert split_annexb(b"\x00\x00\x01\x67a\x00\x00\x00\x01\x68b") == [b"\x67a", b"\x68b"]


def test_short_payloads_never_raise() -> None:
    for mod in (h264, h265):
        tracker = mod.keyframe_tracker()
        d = mod.depacketizer()
        for payload in (b"", b"\x1c", b"\x7c", b"\x62", b"\x62\x01", b"\x18\x00", b"\x60\x01\x00"):
            mod.payload_nal_types(payload)
            tracker.push(payload, True)
            d.push(payload)
