"""WAN impairments without I/O: when each chunk or datagram of one link direction arrives.

Theory of operation. A WAN path between a central site and a remote recorder adds, per
direction, a propagation delay that varies (queueing jitter), a bottleneck of limited
rate, random loss of UDP datagrams and, for TCP, the pauses of loss recovery: a lost
segment holds every byte behind it until the retransmission arrives, so the application
sees the stream stop for about an RTO and then resume with nothing missing. A
:class:`Shaper` models one direction of one link; the asyncio relay
(:mod:`rmfproxy.sim.wan`) asks it, for every TCP chunk and UDP datagram it received at
``now``, when to deliver it (or whether to drop it), and does nothing else.

- Bottleneck: a serialization queue shared by everything the direction carries (TCP and
  UDP of every session): a chunk leaves it ``size * 8 / bandwidth_bps`` after the one
  before it has left (a token bucket of one MTU, in effect).
- Delay: ``delay`` plus a uniform draw in ``±jitter`` per chunk/datagram (never below 0).
  Jitter never reorders a flow: a TCP connection's bytes keep their order, and so does
  each UDP port's datagrams (a FIFO queue's delay variation; netem's jitter reorders,
  real queues rarely do). A chunk is delivered no earlier than the one before it.
- Stalls (TCP only): every ``stall_every`` seconds from ``stall_phase`` after the link's
  epoch, for ``stall_for`` seconds, nothing of any TCP connection is delivered; what was
  due then is delivered in order at the stall's end.
- Loss (UDP only): each datagram is dropped with probability ``udp_loss``.

Every draw comes from one ``random.Random(seed)``: a run with the same traffic pattern is
the same run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Impairment:
    """What one direction of a WAN link does to the traffic (times in seconds)."""

    delay: float = 0.0
    """One-way delay (an 80 ms RTT is 0.04 each way)."""
    jitter: float = 0.0
    """± this much, uniform, per TCP chunk or UDP datagram (order kept within a flow)."""
    bandwidth_bps: float | None = None
    """Bottleneck rate in bit/s (None: unlimited)."""
    udp_loss: float = 0.0
    """Fraction of UDP datagrams dropped."""
    stall_every: float | None = None
    """Every this many seconds, hold every TCP byte (None: never)."""
    stall_for: float = 0.0
    """... for this long, then release it in order."""
    stall_phase: float | None = None
    """Seconds from the link's epoch to its first stall (None: drawn from ``seed``)."""
    seed: int = 0
    """Seed of every random draw."""

    def __post_init__(self) -> None:
        def bad(name: str, problem: str) -> ValueError:
            return ValueError(f"Impairment.{name} {problem}, got {getattr(self, name)!r}")

        for name in ("delay", "jitter", "stall_for"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise bad(name, "must be a number of seconds >= 0")
        if self.bandwidth_bps is not None and not (
            isinstance(self.bandwidth_bps, int | float)
            and math.isfinite(self.bandwidth_bps)
            and self.bandwidth_bps > 0
        ):
            raise bad("bandwidth_bps", "must be > 0 bit/s (or None for unlimited)")
        if not (isinstance(self.udp_loss, int | float) and 0 <= self.udp_loss <= 1):
            raise bad("udp_loss", "must be a fraction between 0 and 1")
        if self.stall_every is not None:
            if not (
                isinstance(self.stall_every, int | float)
                and math.isfinite(self.stall_every)
                and self.stall_every > 0
            ):
                raise bad("stall_every", "must be > 0 seconds (or None for never)")
            if self.stall_for >= self.stall_every:
                raise bad("stall_for", f"must be shorter than stall_every ({self.stall_every})")
        if self.stall_phase is not None and not (
            isinstance(self.stall_phase, int | float)
            and math.isfinite(self.stall_phase)
            and self.stall_phase >= 0
        ):
            raise bad("stall_phase", "must be a number of seconds >= 0 (or None)")

    @property
    def stalls(self) -> bool:
        """Whether TCP stalls are configured."""
        return self.stall_every is not None and self.stall_for > 0

    def phase(self) -> float:
        """Seconds from the epoch to the first stall (``stall_phase``, else from the seed)."""
        if self.stall_phase is not None or self.stall_every is None:
            return self.stall_phase or 0.0
        return random.Random(f"stall-phase-{self.seed}").uniform(0, self.stall_every)


@dataclass
class DirectionStats:
    """What one direction of a link carried."""

    bytes: int = 0
    """Bytes delivered (TCP bytes and UDP payloads)."""
    datagrams: int = 0
    """UDP datagrams delivered."""
    dropped: int = 0
    """UDP datagrams dropped (``udp_loss``)."""
    stalls: int = 0
    """Stall windows that held TCP bytes."""


@dataclass
class LinkStats:
    """What a link carried: ``down`` from the server (recorder) to the client, ``up`` back."""

    down: DirectionStats = field(default_factory=DirectionStats)
    up: DirectionStats = field(default_factory=DirectionStats)
    connections: int = 0
    """TCP connections accepted."""
    udp_pairs: int = 0
    """UDP SETUPs relayed (one port pair on each side)."""


@dataclass
class Flow:
    """One ordered flow (a TCP connection's direction, a UDP port's datagrams)."""

    last: float = 0.0
    """When its last chunk is delivered: the next one is never earlier."""


class Shaper:
    """One direction of one link: delivery times for what arrives (no I/O, no clock)."""

    def __init__(self, impairment: Impairment, epoch: float, *, stream: str = "") -> None:
        self.impairment = impairment
        self.epoch = epoch
        self.stats = DirectionStats()
        self._rng = random.Random(f"{impairment.seed}-{stream}")
        self._free = -math.inf
        """When the bottleneck has sent everything queued so far."""
        self._phase = impairment.phase()
        self._last_stall = -1

    def stall_window(self, t: float) -> tuple[float, float] | None:
        """The stall ``[start, end)`` that contains ``t``, if any."""
        imp = self.impairment
        if not imp.stalls or imp.stall_every is None:
            return None
        rel = t - self.epoch - self._phase
        if rel < 0:
            return None
        k = math.floor(rel / imp.stall_every)
        start = self.epoch + self._phase + k * imp.stall_every
        return (start, start + imp.stall_for) if t < start + imp.stall_for else None

    def schedule(self, flow: Flow, now: float, size: int, *, datagram: bool) -> float | None:
        """When to deliver ``size`` bytes that arrived at ``now`` (None: dropped)."""
        imp = self.impairment
        if datagram and imp.udp_loss and self._rng.random() < imp.udp_loss:
            self.stats.dropped += 1
            return None
        t = now
        if imp.bandwidth_bps is not None:
            t = max(t, self._free) + size * 8 / imp.bandwidth_bps
            self._free = t
        spread = self._rng.uniform(-imp.jitter, imp.jitter) if imp.jitter else 0.0
        t += max(0.0, imp.delay + spread)
        if not datagram:
            window = self.stall_window(t)
            if window is not None:
                t = window[1]
                k = round((window[0] - self.epoch - self._phase) / (imp.stall_every or 1))
                if k != self._last_stall:
                    self._last_stall = k
                    self.stats.stalls += 1
        t = max(t, flow.last)
        flow.last = t
        return t
