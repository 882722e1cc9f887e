"""Heartbeat of one source, without I/O: is its RTP overdue? (the caller passes ``now``).

A TCP close, an RTSP error, a failed keepalive or an RTCP BYE are known at
once (the upstream reports them). A silent freeze is known only when RTP is
overdue: later than the observed frame interval plus a margin for its jitter,
clamped between a floor and a ceiling (per camera). Detection is a budget,
not a constant: a 25 fps camera is declared frozen after about 150 ms, a
1 fps camera after a few seconds.
"""

from __future__ import annotations


class Heartbeat:
    """Tracks frame arrivals of one source and says when it is overdue."""

    __slots__ = ("ceiling", "floor", "interval", "jitter", "last_frame", "last_packet")

    def __init__(self, floor: float = 0.15, ceiling: float = 2.0) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.interval: float | None = None
        """Smoothed interval between frames (seconds)."""
        self.jitter = 0.0
        """Smoothed absolute deviation of the frame interval (seconds)."""
        self.last_frame: float | None = None
        self.last_packet: float | None = None

    def reset(self) -> None:
        """A new session starts: forget the previous arrivals, keep the learned interval."""
        self.last_frame = None
        self.last_packet = None

    def on_packet(self, now: float) -> None:
        """Any RTP packet arrived."""
        self.last_packet = now

    def on_frame(self, now: float) -> None:
        """The first packet of a new video frame arrived."""
        if self.last_frame is not None:
            gap = now - self.last_frame
            if self.interval is None:
                self.interval = gap
            else:
                # RFC 3550 A.8-style smoothing (gain 1/16) for the jitter, 1/8 for the mean.
                self.jitter += (abs(gap - self.interval) - self.jitter) / 16
                self.interval += (gap - self.interval) / 8
        self.last_frame = now
        self.last_packet = now

    def budget(self) -> float:
        """How long after the last packet the source is declared frozen."""
        if self.interval is None:
            return self.ceiling
        return min(self.ceiling, max(self.floor, 2.5 * self.interval + 4 * self.jitter))

    def overdue(self, now: float) -> bool:
        """True when nothing arrived within the budget."""
        return self.last_packet is not None and now - self.last_packet > self.budget()

    def deadline(self) -> float | None:
        """When the source becomes overdue if nothing arrives (for timers)."""
        return None if self.last_packet is None else self.last_packet + self.budget()
