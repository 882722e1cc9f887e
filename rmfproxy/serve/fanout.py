"""Fan-out of one outbound stream to many clients, with a GOP buffer for fast start.

Every packet handed to :meth:`Fanout.send_rtp` already carries the outbound
SSRC, sequence number and timestamp; the same bytes go to every client (no
per-client copy or rewrite). The current GOP (from the last keyframe start of
the video track, with everything sent since on every track) is kept, bounded
in bytes, so that a new client starts at once on a decodable keyframe
instead of waiting up to a GOP for the next one.

The packets are shared: producers must not mutate a packet after sending it.
"""

from __future__ import annotations

import contextlib

from rmfproxy.rtp import packet as rtp
from rmfproxy.serve.stream import MediaSink, TrackStart


class Fanout:
    """Sends one stream's packets to every attached sink."""

    def __init__(
        self, tracks: int, video_track: int | None, gop_limit_bytes: int = 8 << 20
    ) -> None:
        self.tracks = tracks
        self.video_track = video_track
        self.gop_limit_bytes = gop_limit_bytes
        self.sinks: list[MediaSink] = []
        self._gop: list[tuple[int, bytes | bytearray]] = []
        self._gop_bytes = 0
        self._gop_valid = False
        self._last: dict[int, tuple[int, int]] = {}
        self.packets_sent = 0

    def send_rtp(self, track: int, packet: bytes | bytearray, keyframe_start: bool) -> None:
        """Send one outbound RTP packet to every sink and remember it in the GOP buffer."""
        is_video = track == self.video_track or self.video_track is None
        if keyframe_start and is_video:
            self._gop.clear()
            self._gop_bytes = 0
            self._gop_valid = True
        if self._gop_valid:
            self._gop_bytes += len(packet)
            if self._gop_bytes > self.gop_limit_bytes:
                # An oversized GOP is not kept: new clients wait for the next keyframe.
                self._gop.clear()
                self._gop_valid = False
            else:
                self._gop.append((track, packet))
        self._last[track] = (rtp.sequence(packet), rtp.timestamp(packet))
        self.packets_sent += 1
        for sink in self.sinks:
            sink.deliver(track, packet, keyframe_start and is_video)

    def send_rtcp(self, track: int, packet: bytes) -> None:
        """Send one RTCP packet (a sender report) to every sink."""
        for sink in self.sinks:
            sink.deliver_rtcp(track, packet)

    def start_points(self) -> dict[int, TrackStart]:
        """Where a client attached now would start on each track."""
        starts: dict[int, TrackStart] = {}
        if self._gop_valid:
            for track, pkt in self._gop:
                if track not in starts:
                    starts[track] = TrackStart(rtp.sequence(pkt), rtp.timestamp(pkt))
        for track, (seq, ts) in self._last.items():
            if track not in starts:
                starts[track] = TrackStart((seq + 1) & 0xFFFF, ts)
        return starts

    def attach(self, sink: MediaSink) -> None:
        """Add a sink; it gets the buffered GOP at once, then the live packets."""
        if self._gop_valid:
            first = True
            for track, pkt in self._gop:
                sink.deliver(track, pkt, first)
                first = False
        self.sinks.append(sink)

    def detach(self, sink: MediaSink) -> None:
        """Remove a sink (no-op if it is not attached)."""
        with contextlib.suppress(ValueError):
            self.sinks.remove(sink)

    def close_all(self, reason: str) -> None:
        """Tell every sink the stream ended and forget them."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close(reason)
