"""Thumbnails of recorders that place their parameter sets their own way, without sockets.

A feed with two sources (r0 relayed, r1 its standby) is fed a real encoded clip (PyAV,
160x96) by two recorders with the same habit, and each source's thumbnail is made from its
keyframe snapshot as the admin API makes it. The habits: the parameter sets in the
keyframe's own RTP packets (the control), the same without any marker bit (a unit ends at
the next timestamp), in a unit of their own under their own RTP timestamp and with a
marker bit, or never in band (only the SDP's ``sprop-*``).

The relayed source's packets are restamped in place when they go out (one timestamp per
unit, one marker bit), its standby's are kept as they came: both must decode.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import av
import pytest

from rmfproxy.ops.thumbnail import WIDTH, keyframe_access_unit, render_jpeg
from rmfproxy.relay.feed import Feed
from rmfproxy.relay.snapshot import keyframe
from rmfproxy.rtp import h264, h265
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.sim.encoder import EncodedClip, encode_clip

Codec = Literal["h264", "h265"]
Habit = Literal["inline", "unmarked", "apart", "sdp"]
FPS = 25
GOP = 5
TICKS = 90000 // FPS
SIZE = (160, 96)


def clip(codec: Codec) -> EncodedClip:
    return encode_clip(codec, width=SIZE[0], height=SIZE[1], fps=FPS, gop=GOP, seconds=0.2)


def sdp(c: EncodedClip, habit: Habit) -> SessionDescription:
    """The recorders' SDP: with ``sprop-*`` only when the parameter sets are not in band."""
    encoding = "H264" if c.codec == "h264" else "H265"
    text = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
        "a=control:*\r\nm=video 0 RTP/AVP 96\r\n"
        f"a=rtpmap:96 {encoding}/90000\r\na=control:trackID=0\r\n"
    )
    if habit == "sdp":
        text += f"a=fmtp:{c.sdp_fmtp(96)}\r\n"
    return SessionDescription.parse(text)


class Recorder:
    """Re-streams the clip with its own SSRC, numbering and parameter-set habit."""

    def __init__(self, c: EncodedClip, habit: Habit, ssrc: int) -> None:
        self.clip = c
        self.habit = habit
        self.ssrc = ssrc
        self.seq = 1000 * ssrc
        self.base = 12345 * ssrc
        fmt = h264.FORMAT if c.codec == "h264" else h265.FORMAT
        self.params = set(fmt.param_types)
        self.nal_type = fmt.nal_type
        self.packetize = h264.packetize if c.codec == "h264" else h265.packetize

    def packets(self, n: int) -> list[bytearray]:
        """Access unit ``n`` of the clip as this recorder sends it."""
        nals = self.clip.access_units[n % len(self.clip.access_units)].nals
        params = [x for x in nals if self.nal_type(x) in self.params]
        body = [x for x in nals if self.nal_type(x) not in self.params]
        ts = self.base + n * TICKS
        units: list[tuple[int, list[bytes]]] = []
        if self.habit in ("inline", "unmarked"):
            units.append((ts, nals))
        elif self.habit == "apart":
            if params:  # a unit of their own, one tick before the picture's
                units.append((ts - 1, params))
            units.append((ts, body))
        else:
            units.append((ts, body))
        out = []
        for stamp, unit in units:
            payloads = self.packetize(unit)
            for i, p in enumerate(payloads):
                marker = i == len(payloads) - 1 and self.habit != "unmarked"
                out.append(bytearray(rtp.build(96, self.seq, stamp, self.ssrc, p, marker)))
                self.seq += 1
        return out


def no_source(index: int, listener: Any) -> tuple[str, Any]:
    return f"r{index}", None  # packets are pushed into the core directly


def fed(codec: Codec, habit: Habit) -> Feed:
    """A feed after three GOPs of two recorders with ``habit``: r0 relayed, r1 standing by."""
    c = clip(codec)
    now = 0.0
    feed = Feed("lobby", no_source, 2, clock=lambda: now)
    core = feed.core
    core.on_start(now)
    for i in (0, 1):
        core.on_connected(i, sdp(c, habit), now)
    recorders = [Recorder(c, habit, ssrc=i + 1) for i in (0, 1)]
    for n in range(3 * GOP):
        now = n / FPS
        while core.deadline() <= now:
            core.on_timer(now)
        for i, rec in enumerate(recorders):
            for pkt in rec.packets(n):
                core.on_packet(i, 0, False, pkt, now)
    return feed


def thumbnail_size(feed: Feed, source: int) -> tuple[int, int]:
    key = keyframe(feed, source)
    assert key is not None
    au = keyframe_access_unit(key)
    assert au is not None
    jpeg = render_jpeg(*au)
    with av.open(io.BytesIO(jpeg)) as container:
        frame = next(container.decode(video=0))
    return frame.width, frame.height


@pytest.mark.parametrize("habit", ["inline", "unmarked", "apart", "sdp"])
@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_each_sources_keyframe_decodes_whatever_its_parameter_set_habit(
    codec: Codec, habit: Habit
) -> None:
    feed = fed(codec, habit)
    assert feed.active == 0
    want = (WIDTH, WIDTH * SIZE[1] // SIZE[0])
    assert [thumbnail_size(feed, i) for i in (0, 1)] == [want, want]
