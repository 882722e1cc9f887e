"""Heartbeat of one source, without I/O: is its RTP overdue? (the caller passes ``now``).

A TCP close, an RTSP error, a failed keepalive or an RTCP BYE are known at
once (the upstream reports them). A silent freeze is known only when RTP is
overdue. Detection is a budget, not a constant, and it knows the path:

- *frame budget*: the observed frame interval plus a margin for its jitter
  (2.5 intervals + 4 x smoothed jitter): a 25 fps camera on a LAN is declared
  frozen after about 150 ms (the floor), a 1 fps camera after a few seconds;
- *path allowance*: what this source's path has shown it does and recovers
  from. Every silence longer than the frame budget that ended with the same
  session delivering again is a *stall* the path survived; the longest one of
  the last ``memory`` seconds, plus a fifth and 50 ms, is allowed. Before the
  path has shown anything, media over TCP on a routed path (request round
  trip ``rtt`` ≥ 10 ms) is allowed one loss recovery: a minimum TCP
  retransmission timeout (200 ms), three round trips and two frame intervals.
  A stall longer than ``learn_limit`` is a failure, never learned (a recorder
  that froze for seconds and came back must not slow down the next detection);
- the budget is the larger of the two, clamped to [floor, ceiling]; a fixed
  ``override`` (per source, set by the operator) replaces all of it.

A kill is still known at once (the TCP close); a source frozen for good is
declared frozen after its budget: on a clean LAN path 150 ms, on an 80 ms RTT
WAN path with 300 ms loss-recovery stalls about 0.5 s.
"""

from __future__ import annotations

from collections import deque

RTO_MIN = 0.2
"""Linux's minimum TCP retransmission timeout (seconds): one lost segment can hold a TCP
stream for at least this long plus a round trip."""
ROUTED_RTT = 0.01
"""Round trips at or above this (seconds) mean a routed path where TCP loss recovery is
expected; below it (loopback, one switch) a stall is a failure until shown otherwise."""
STALL_MEMORY = 600.0
"""Seconds a survived stall is remembered."""
LEARN_LIMIT = 1.0
"""Longest silence learned as the path's behaviour (longer ones are failures)."""


class Heartbeat:
    """Tracks arrivals of one source, learns its path's stalls and says when it is overdue."""

    __slots__ = (
        "_stalls",
        "ceiling",
        "floor",
        "interval",
        "jitter",
        "last_frame",
        "last_packet",
        "learn_limit",
        "memory",
        "override",
        "rtt",
        "tcp",
    )

    def __init__(
        self,
        floor: float = 0.15,
        ceiling: float = 2.0,
        *,
        override: float | None = None,
        learn_limit: float = LEARN_LIMIT,
        memory: float = STALL_MEMORY,
    ) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.override = override
        """A fixed budget set by the operator (no learning), or None."""
        self.learn_limit = learn_limit
        self.memory = memory
        self.interval: float | None = None
        """Smoothed interval between frames (seconds)."""
        self.jitter = 0.0
        """Smoothed absolute deviation of the frame interval (seconds)."""
        self.last_frame: float | None = None
        self.last_packet: float | None = None
        self.rtt: float | None = None
        """Round trip of the source's RTSP requests (the fastest recent one), if known."""
        self.tcp = False
        """Media arrives over TCP (interleaved), where a lost segment stalls the stream."""
        self._stalls: deque[tuple[float, float]] = deque()
        """Survived stalls (when it ended, how long it was), oldest first, maxima kept."""

    def reset(self) -> None:
        """A new session starts: forget the previous arrivals, keep what was learned."""
        self.last_frame = None
        self.last_packet = None

    def set_path(self, *, rtt: float | None, tcp: bool) -> None:
        """What is known of the path: the request round trip and the media transport."""
        self.rtt = rtt
        self.tcp = tcp

    def on_packet(self, now: float) -> None:
        """Any RTP packet arrived."""
        last = self.last_packet
        self.last_packet = now
        if last is not None and now - last > self.floor:  # settles almost every packet
            self._learn(now, now - last)

    def on_frame(self, now: float) -> None:
        """The first packet of a new video frame arrived."""
        last = self.last_packet
        if last is not None and now - last > self.floor:
            self._learn(now, now - last)
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

    def _learn(self, now: float, gap: float) -> None:
        """A packet ends a silence of ``gap`` (over the floor): one longer than the frame
        budget is a survived stall."""
        if gap <= self.frame_budget() or gap > self.learn_limit:
            return
        stalls = self._stalls
        while stalls and stalls[-1][1] <= gap:
            stalls.pop()  # a longer, later stall makes the shorter earlier ones irrelevant
        stalls.append((now, gap))

    def frame_budget(self) -> float:
        """The budget from the frame interval and jitter alone (what a clean path needs)."""
        if self.interval is None:
            return self.ceiling
        return min(self.ceiling, max(self.floor, 2.5 * self.interval + 4 * self.jitter))

    def path_allowance(self, now: float | None = None) -> float:
        """The silence this source's path has shown it recovers from (0 when none)."""
        stalls = self._stalls
        if now is not None:
            while stalls and now - stalls[0][0] > self.memory:
                stalls.popleft()
        learned = 1.2 * stalls[0][1] + 0.05 if stalls else 0.0
        prior = 0.0
        if self.tcp and self.rtt is not None and self.rtt >= ROUTED_RTT:
            prior = RTO_MIN + 3 * self.rtt + 2 * (self.interval or 0.04)
        return max(learned, prior)

    def budget(self, now: float | None = None) -> float:
        """How long after the last packet the source is declared frozen."""
        if self.override is not None:
            return self.override
        return min(self.ceiling, max(self.frame_budget(), self.path_allowance(now)))

    def stalls(self) -> int:
        """Survived stalls remembered (the longest of them sets the allowance)."""
        return len(self._stalls)

    def overdue(self, now: float) -> bool:
        """True when nothing arrived within the budget."""
        return self.last_packet is not None and now - self.last_packet > self.budget(now)

    def deadline(self) -> float | None:
        """When the source becomes overdue if nothing arrives (for timers)."""
        return None if self.last_packet is None else self.last_packet + self.budget()
