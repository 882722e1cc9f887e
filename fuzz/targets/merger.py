"""The video merger (rmfproxy/relay/merge.py): access units of several sources in, one
outbound stream out.

Input layout: the first byte picks the codec (even: H.264, odd: H.265) and whether
sources are merged (bit 1); the rest is a run of packets, each behind a 3-byte head:
the source index (low 2 bits of the first byte, at most 3 sources), the clock step in
milliseconds (second byte) and the packet length (third byte; 0xFF: the rest of the
input). A packet is completed to a version-2 RTP header when it is shorter than one;
anything the feed would drop before merging (``parse_header`` rejects it) is skipped,
as the feed does. At most 512 packets are read.

Contract: ``Merger.push`` never raises for a packet the feed hands it. What goes out is
one stream: one SSRC, sequence numbers +1 per packet, timestamps that never go back,
the marker bit only on the last packet of each access unit (a packet followed by one
with another timestamp).
"""

from __future__ import annotations

import itertools
import random

from fuzz.targets import check
from rmfproxy.relay.merge import Merger
from rmfproxy.rtp import h264, h265
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.seqnum import seq_diff, ts_diff

MAX_LEN = 16384
MAX_PACKETS = 512

DICTIONARY = (
    b"\x80\x60",  # RTP version 2, PT 96
    b"\x80\xe0",  # ... with the marker bit
    b"\x67\x42\xc0\x1f",  # H.264 SPS
    b"\x68\xce\x3c\x80",  # H.264 PPS
    b"\x65\x88",  # H.264 IDR
    b"\x41\x9a",  # H.264 P slice
    b"\x18",  # STAP-A
    b"\x7c\x85",  # FU-A start of an IDR
    b"\x7c\x45",  # FU-A end of an IDR
    b"\x40\x01",  # H.265 VPS
    b"\x42\x01",  # H.265 SPS
    b"\x44\x01",  # H.265 PPS
    b"\x2a\x01",  # H.265 CRA
    b"\x10\x01",  # H.265 RASL_N
    b"\x62\x01\x93",  # H.265 FU start
)


def packets(data: bytes) -> list[tuple[int, float, bytearray]]:
    """``(source, clock step in seconds, packet)`` triples of the input."""
    out = []
    pos = 1
    while pos + 3 <= len(data) and len(out) < MAX_PACKETS:
        index, step, size = data[pos] & 0x03, data[pos + 1] / 1000, data[pos + 2]
        pos += 3
        end = len(data) if size == 0xFF else min(len(data), pos + size)
        body = bytearray(data[pos:end])
        pos = end
        if len(body) < 12:
            body = bytearray(b"\x80\x60") + bytes(10 - max(0, len(body) - 2)) + body[2:]
        body[0] = (body[0] & 0x3F) | 0x80  # version 2, as the feed checks
        out.append((index % 3, step, body))
    return out


def test_one_input(data: bytes) -> None:
    """Push every packet as the feed would; check the outbound stream."""
    if not data:
        return
    fmt = h264.FORMAT if data[0] % 2 == 0 else h265.FORMAT
    m = Merger(fmt, 90000, random.Random(1), merge=bool(data[0] & 2))
    m.anchor(0)
    m.active = 0
    now = 0.0
    out: list[bytearray] = []
    for index, step, pkt in packets(data):
        now += step
        try:
            start, end = rtp.payload_span(pkt)
        except ValueError:
            continue  # the feed counts and drops these before the merger
        if index == 1 and step > 0.2:
            m.anchor(index)
        out += [p for p, _ in m.push(index, pkt, start, end, now)]
        m.events.clear()
    if not out:
        return
    check({rtp.ssrc(p) for p in out} == {m.timeline.ssrc}, "one outbound SSRC")
    check(
        all(seq_diff(rtp.sequence(b), rtp.sequence(a)) == 1 for a, b in itertools.pairwise(out)),
        "sequence +1 per packet",
    )
    check(
        all(ts_diff(rtp.timestamp(b), rtp.timestamp(a)) >= 0 for a, b in itertools.pairwise(out)),
        "timestamps never go back",
    )
    for a, b in itertools.pairwise(out):
        if rtp.timestamp(a) != rtp.timestamp(b):
            check(rtp.marker(a), "the marker bit ends every access unit")
        else:
            check(not rtp.marker(a), "no marker bit inside an access unit")
