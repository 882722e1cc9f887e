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
from collections.abc import Sequence

from rmfproxy.rtp import packet as rtp
from rmfproxy.serve.close_reason import CloseReason
from rmfproxy.serve.gop import GopBuffer
from rmfproxy.serve.stream import MediaSink, TrackStart


class Fanout:
    """Sends one stream's packets to every attached sink."""

    def __init__(
        self, tracks: int, video_track: int | None, gop_limit_bytes: int = 8 << 20
    ) -> None:
        self.tracks = tracks
        self.video_track = video_track
        self.sinks: list[MediaSink] = []
        self.gop = GopBuffer(gop_limit_bytes)
        self._last: dict[int, bytes | bytearray] = {}
        """The last packet sent on each track (read only when a client attaches)."""
        self.packets_sent = 0
        self.retired_packets_sent = 0
        """Packets sent to clients that have gone (their sinks are forgotten)."""
        self.retired_packets_dropped = 0

    def send_rtp(
        self, track: int, packet: bytes | bytearray, keyframe_start: bool, now: float
    ) -> None:
        """Send one outbound RTP packet to every sink and remember it in the GOP buffer
        (``now``: the caller's clock, for the buffer's age bound)."""
        is_video = track == self.video_track or self.video_track is None
        self.send_many(track, ((packet, keyframe_start and is_video),), now)

    def send_many(
        self, track: int, packets: Sequence[tuple[bytes | bytearray, bool]], now: float
    ) -> None:
        """Send outbound RTP packets ``(packet, keyframe_start)`` of one track, in order (an
        access unit or a few: one call per sink, not one per packet). A keyframe starts
        only on the video track: the caller flags no other packet."""
        if not packets:
            return
        push = self.gop.push
        for packet, keyframe_start in packets:
            # An oversized or overlong GOP is not kept: new clients then wait for the next
            # keyframe.
            push(track, packet, keyframe_start, now)
        self._last[track] = packets[-1][0]
        self.packets_sent += len(packets)
        for sink in self.sinks:
            sink.deliver_many(track, packets)

    def send_rtcp(self, track: int, packet: bytes) -> None:
        """Send one RTCP packet (a sender report) to every sink."""
        for sink in self.sinks:
            sink.deliver_rtcp(track, packet)

    def start_points(self) -> dict[int, TrackStart]:
        """Where a client attached now would start on each track."""
        starts: dict[int, TrackStart] = {}
        if self.gop.valid:
            for track, pkt in self.gop.packets:
                if track not in starts:
                    starts[track] = TrackStart(rtp.sequence(pkt), rtp.timestamp(pkt))
        for track, pkt in self._last.items():
            if track not in starts:
                starts[track] = TrackStart((rtp.sequence(pkt) + 1) & 0xFFFF, rtp.timestamp(pkt))
        return starts

    def attach(self, sink: MediaSink) -> None:
        """Add a sink; it gets the buffered GOP at once, then the live packets."""
        if self.gop.valid:
            first = True
            for track, pkt in self.gop.packets:
                sink.deliver_many(track, ((pkt, first),))
                first = False
        self.sinks.append(sink)

    def detach(self, sink: MediaSink) -> None:
        """Remove a sink (no-op if it is not attached)."""
        with contextlib.suppress(ValueError):
            self.sinks.remove(sink)
            self._retire(sink)

    def _retire(self, sink: MediaSink) -> None:
        self.retired_packets_sent += sink.packets_sent
        self.retired_packets_dropped += sink.packets_dropped

    def client_packets(self) -> tuple[int, int]:
        """Packets sent to and dropped for (too slow) clients, since the start, gone ones too."""
        sent = self.retired_packets_sent + sum(s.packets_sent for s in self.sinks)
        dropped = self.retired_packets_dropped + sum(s.packets_dropped for s in self.sinks)
        return sent, dropped

    def close_all(self, reason: CloseReason) -> None:
        """Tell every sink the stream ended and forget them."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            self._retire(sink)
            sink.close(reason)
