"""What a served path is: the contract between the RTSP server and a media producer.

Both the relay feed (one camera behind the proxy) and a simulated camera (on a
simulated recorder) implement :class:`MediaStream`; the server never knows
which one it serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.close_reason import CloseReason


@dataclass(frozen=True, slots=True)
class TrackStart:
    """Where a newly attached client's stream begins on one track (for RTP-Info)."""

    sequence: int
    """RTP sequence number of the first packet the client will receive."""
    rtptime: int
    """RTP timestamp of that packet."""


class MediaSink(Protocol):
    """A client's receiving end: the fan-out calls these for every packet."""

    packets_sent: int
    """RTP packets handed to the client's transport."""
    packets_dropped: int
    """RTP packets not sent because the client was too slow."""

    def deliver_many(self, track: int, packets: Iterable[tuple[bytes | bytearray, bool]]) -> None:
        """Send RTP packets ``(packet, keyframe_start)`` of one track, in order (already
        carrying the outbound SSRC/seq/ts)."""

    def deliver_rtcp(self, track: int, packet: bytes) -> None:
        """Send one RTCP packet for ``track``."""

    def close(self, reason: CloseReason) -> None:
        """The stream ends for this client (camera removed, server shutting down)."""


class MediaStream(Protocol):
    """A path the RTSP server serves."""

    def sdp(self) -> SessionDescription | None:
        """The description clients get at DESCRIBE, or None while not yet known (503)."""

    def ssrc(self, track: int) -> int:
        """The outbound SSRC of ``track``, announced in the SETUP reply."""

    def start_points(self) -> dict[int, TrackStart]:
        """Where a client attached now would start on each track, for RTP-Info."""

    def attach(self, sink: MediaSink) -> None:
        """Start sending to ``sink`` (it may get buffered packets at once)."""

    def detach(self, sink: MediaSink) -> None:
        """Stop sending to ``sink``."""
