"""RTP fixed header (rmfproxy/rtp/packet.py).

Contract: ``parse_header`` and ``payload_span`` reject with ``ValueError``
only. Once a header parsed, the hot-path accessors (which trust their input)
must agree with it, the payload span must lie inside the packet, and
``rewrite`` must change exactly the rewritten fields.
"""

from __future__ import annotations

from fuzz.targets import check
from rmfproxy.rtp import packet

MAX_LEN = 65535 + 4
"""The largest interleaved frame (RFC 2326 §10.12: 16-bit length)."""

DICTIONARY = (b"\x80\x60", b"\x80\xe0", b"\x90\x60", b"\xa0\x60", b"\xbe\xde", b"\x8f\x60")


def test_one_input(data: bytes) -> None:
    """Parse, cross-check the accessors, rewrite and parse again."""
    try:
        h = packet.parse_header(data)
    except ValueError:
        return
    check(packet.parse_header(memoryview(data)) == h, "bytes and memoryview parse the same")
    check(packet.payload_span(data) == (h.payload_offset, h.payload_end), "payload_span agrees")
    check(12 <= h.payload_offset <= h.payload_end <= len(data), "the payload lies in the packet")
    check(
        (packet.marker(data), packet.payload_type(data), packet.sequence(data))
        == (h.marker, h.payload_type, h.sequence),
        "marker/payload_type/sequence accessors agree",
    )
    check(
        (packet.timestamp(data), packet.ssrc(data)) == (h.timestamp, h.ssrc),
        "timestamp/ssrc accessors agree",
    )
    buf = bytearray(data)
    packet.rewrite(buf, ssrc=0x11223344, sequence=h.sequence + 1, timestamp=h.timestamp + 3000)
    r = packet.parse_header(buf)
    check(
        (r.ssrc, r.sequence, r.timestamp)
        == (0x11223344, (h.sequence + 1) & 0xFFFF, (h.timestamp + 3000) & 0xFFFFFFFF),
        "rewrite sets ssrc, sequence and timestamp with wraparound",
    )
    check(
        (r.payload_offset, r.payload_end, r.marker, r.payload_type)
        == (h.payload_offset, h.payload_end, h.marker, h.payload_type),
        "rewrite leaves the rest of the header alone",
    )
    check(buf[h.payload_offset :] == data[h.payload_offset :], "rewrite leaves the payload alone")
