"""The H.264 / H.265 NAL layer over RTP (rmfproxy/rtp/nal.py): ``Depacketizer``,
``KeyframeTracker`` and ``starting_types``.

Input layout: the first byte picks the codec (even: H.264, odd: H.265) and the
packetizer MTU for the round trip; the rest is a run of RTP payloads, each
behind one byte whose top bit is the marker bit and whose low 7 bits are its
length (127: the rest of the input); at most 256 payloads are read.

Contract: none of the three ever raises (a bad payload is counted in
``Depacketizer.errors`` and dropped). Every NAL unit a payload starts is
reported by ``starting_types``; the NAL units rebuilt by the depacketizer go
through ``packetize`` and back unchanged.
"""

from __future__ import annotations

from fuzz.targets import check
from rmfproxy.rtp import h264, h265, nal

MAX_LEN = 8192

DICTIONARY = (
    b"\x67\x42\xc0\x1f",  # H.264 SPS
    b"\x68\xce\x3c\x80",  # H.264 PPS
    b"\x65\x88",  # H.264 IDR
    b"\x18",  # STAP-A
    b"\x7c\x85",  # FU-A start of an IDR
    b"\x7c\x45",  # FU-A end of an IDR
    b"\x40\x01",  # H.265 VPS
    b"\x42\x01",  # H.265 SPS
    b"\x44\x01",  # H.265 PPS
    b"\x26\x01",  # H.265 IDR_W_RADL
    b"\x60\x01",  # H.265 AP
    b"\x62\x01\x93",  # H.265 FU start of IDR_W_RADL
    b"\x62\x01\x53",  # H.265 FU end of IDR_W_RADL
)


MAX_PAYLOADS = 256
"""Payloads per input: a keyframe of a few hundred KB; the 10 ms bound is for one input."""


def payloads(data: bytes) -> list[tuple[bytes, bool]]:
    """Split the input (after the first byte) into ``(payload, marker)`` pairs."""
    out = []
    pos = 1
    while pos < len(data) and len(out) < MAX_PAYLOADS:
        head = data[pos]
        size = head & 0x7F
        end = len(data) if size == 0x7F else pos + 1 + size
        out.append((data[pos + 1 : end], bool(head & 0x80)))
        pos = end
    return out


def timed(data: bytes) -> None:
    """What the proxy does per packet: starting types, keyframe tracking, depacketizing."""
    if not data:
        return
    fmt = h265.FORMAT if data[0] & 1 else h264.FORMAT
    depacketizer = nal.Depacketizer(fmt)
    tracker = nal.KeyframeTracker(fmt)
    for payload, marker in payloads(data):
        nal.starting_types(fmt, payload)
        tracker.push(payload, marker)
        depacketizer.push(payload)


def test_one_input(data: bytes) -> None:
    """Depacketize, track keyframes and list starting types; re-packetize the NAL units."""
    if not data:
        return
    fmt = h265.FORMAT if data[0] & 1 else h264.FORMAT
    mtu = 24 + (data[0] >> 1)
    depacketizer = nal.Depacketizer(fmt)
    tracker = nal.KeyframeTracker(fmt)
    rebuilt: list[bytes] = []
    for payload, marker in payloads(data):
        types = nal.starting_types(fmt, payload)
        check(all(0 <= t < 64 for t in types), "NAL types are 5 or 6 bits")
        key = tracker.push(payload, marker)
        check(not key or any(t in fmt.keyframe_types for t in types), "keyframes start with one")
        out = depacketizer.push(memoryview(payload))
        check(all(isinstance(n, bytes) and n for n in out), "rebuilt NAL units are non-empty bytes")
        rebuilt += out
    # Units the packetizer can carry: a whole header, not itself an AP/FU type.
    carried = [
        n
        for n in rebuilt
        if len(n) >= fmt.header_len and fmt.nal_type(n) not in (fmt.aggregate, fmt.fragment)
    ]
    again = nal.Depacketizer(fmt)
    back: list[bytes] = []
    for p in nal.packetize(fmt, carried, mtu):
        back += again.push(p)
    check(
        back == carried and again.errors == 0, "packetize -> depacketize gives the NAL units back"
    )
