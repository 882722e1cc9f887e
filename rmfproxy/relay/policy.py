"""Which source a feed should relay, without I/O (the caller passes ``now``).

In order: a manual choice while that source is healthy; otherwise the active
source while it is healthy, unless a higher-priority source (config order)
has been healthy for the whole hold-down time (failback); otherwise the
highest-priority healthy source (failover). With no healthy source there is
no target and the client session waits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.Enum):
    """Why a switch happens; also the metric label."""

    FAILOVER = "failover"
    FAILBACK = "failback"
    MANUAL = "manual"
    INITIAL = "initial"


@dataclass(frozen=True, slots=True)
class Decision:
    """Switch to ``target`` for ``reason``."""

    target: int
    reason: Reason


class SwitchPolicy:
    """Priorities, hold-down and manual override for one feed's sources."""

    def __init__(self, sources: int, failback_hold: float = 10.0) -> None:
        self.sources = sources
        self.failback_hold = failback_hold
        self.manual: int | None = None
        self._healthy_since: list[float | None] = [None] * sources

    def set_manual(self, index: int | None) -> None:
        """Pin a source (None: back to automatic)."""
        if index is not None and not 0 <= index < self.sources:
            raise ValueError(f"no source {index}; this feed has {self.sources}")
        self.manual = index

    def observe(self, now: float, healthy: list[bool]) -> None:
        """Record which sources are healthy now."""
        for i, ok in enumerate(healthy):
            if not ok:
                self._healthy_since[i] = None
            elif self._healthy_since[i] is None:
                self._healthy_since[i] = now

    def healthy_for(self, index: int, now: float) -> float:
        """Seconds source ``index`` has been continuously healthy (0 if not healthy)."""
        since = self._healthy_since[index]
        return 0.0 if since is None else now - since

    def decide(self, now: float, healthy: list[bool], current: int | None) -> Decision | None:
        """The switch to make now, or None to stay."""
        self.observe(now, healthy)
        if self.manual is not None and healthy[self.manual]:
            if current != self.manual:
                return Decision(self.manual, Reason.MANUAL)
            return None
        best = next((i for i, ok in enumerate(healthy) if ok), None)
        if best is None:
            return None
        if current is None:
            return Decision(best, Reason.INITIAL)
        if not healthy[current]:
            return Decision(best, Reason.FAILOVER)
        if best < current and self.healthy_for(best, now) >= self.failback_hold:
            return Decision(best, Reason.FAILBACK)
        return None
