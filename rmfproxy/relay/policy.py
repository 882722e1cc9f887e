"""Which source a feed should relay, without I/O (the caller passes ``now``).

In order: a manual choice while that source is healthy; otherwise the active
source while it is healthy, unless a higher-priority source (config order)
has been healthy for the whole hold-down time (failback); otherwise the
highest-priority healthy source (failover). With no healthy source there is
no target and the client session waits.

Standby modes (:mod:`rmfproxy.relay.standby`). A warm or cold source is not healthy
while it stands by (no media) but may be *available*: promoted on demand, it delivers
from its first keyframe after PLAY. Healthy or available is *usable*. A manual pin, the
initial choice and failback take the highest-priority usable source (failback once it
has been usable for the hold-down). On failover a source that is flowing now is
preferred, whatever its priority, since the switch to it is hitless or within one GOP;
with none flowing, the highest-priority available one is promoted. At start a standby
other than the first source is promoted only if no source flows within
``INITIAL_GRACE`` (the hot ones are usually connecting at that moment). Without standby
sources (``available`` not given, or all False) this is exactly the rule above.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

INITIAL_GRACE = 3.0
"""Seconds from the first decision during which the initial choice waits for a flowing
source rather than promote a standby that is not the first source."""


class Reason(enum.StrEnum):
    """Why a switch happens; also the metric label (a string, as JSON and labels take it)."""

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
        self._usable_since: list[float | None] = [None] * sources
        self._first: float | None = None

    def set_manual(self, index: int | None) -> None:
        """Pin a source (None: back to automatic)."""
        if index is not None and not 0 <= index < self.sources:
            raise ValueError(f"no source {index}; this feed has {self.sources}")
        self.manual = index

    def observe(self, now: float, healthy: list[bool], usable: list[bool] | None = None) -> None:
        """Record which sources are healthy (and usable: healthy or available) now."""
        for since, flags in ((self._healthy_since, healthy), (self._usable_since, usable)):
            for i, ok in enumerate(healthy if flags is None else flags):
                if not ok:
                    since[i] = None
                elif since[i] is None:
                    since[i] = now

    def healthy_for(self, index: int, now: float) -> float:
        """Seconds source ``index`` has been continuously healthy (0 if not healthy)."""
        since = self._healthy_since[index]
        return 0.0 if since is None else now - since

    def usable_for(self, index: int, now: float) -> float:
        """Seconds source ``index`` has been continuously healthy or available."""
        since = self._usable_since[index]
        return 0.0 if since is None else now - since

    def decide(
        self,
        now: float,
        healthy: list[bool],
        current: int | None,
        available: list[bool] | None = None,
    ) -> Decision | None:
        """The switch to make now, or None to stay. ``available``: standby sources that
        can be promoted on demand (default: none)."""
        usable = healthy
        if available is not None and any(available):
            usable = [h or a for h, a in zip(healthy, available, strict=True)]
        self.observe(now, healthy, usable)
        if self._first is None:
            self._first = now
        if self.manual is not None and usable[self.manual]:
            if current != self.manual:
                return Decision(self.manual, Reason.MANUAL)
            return None
        best = next((i for i, ok in enumerate(healthy) if ok), None)
        top = next((i for i, ok in enumerate(usable) if ok), None)
        if top is None:
            return None
        if current is None:
            if healthy[top] or top == 0 or now - self._first >= INITIAL_GRACE:
                return Decision(top, Reason.INITIAL)
            return None if best is None else Decision(best, Reason.INITIAL)
        if not healthy[current]:
            # Flowing first: its switch is hitless or within a GOP; a promotion costs a
            # round trip and the promoted source's first keyframe on top.
            if best is None:  # not the current one: it may be restarting on its own
                best = next((i for i, ok in enumerate(usable) if ok and i != current), None)
            return None if best is None else Decision(best, Reason.FAILOVER)
        if top < current and self.usable_for(top, now) >= self.failback_hold:
            return Decision(top, Reason.FAILBACK)
        return None
