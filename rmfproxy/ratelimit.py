"""Log a repeated event at most once per key per interval, with how many times it happened.

Theory of operation. A flood of identical events (wrong bearer tokens from one client,
spoofed datagrams at one source) must not become a flood of log lines, yet the count must
not be lost. :class:`RateLimitedLog` keeps, per key, the start of its current window and
the events suppressed in it:

- :meth:`hit` counts one event. The first event of a key, or the first after its window
  ended, opens a new window and returns how many events to report now (this one plus any
  suppressed in the window that just ended); inside a window it returns ``None``.
- :meth:`flush` returns ``(key, count)`` for every window that ended with suppressed
  events (the summary line), opening a new window for each, and forgets idle keys.
- :meth:`deadline` says when :meth:`flush` next has something to report, so the driver
  arms exactly one timer (as aioquic's ``get_timer()``) instead of polling.
- :meth:`drain` hands over every suppressed count at shutdown.

The class never reads the clock: callers pass ``now`` (any monotonic seconds). The number
of keys is bounded; when full, the oldest key is forgotten and its suppressed events are
added to :attr:`evicted`. Imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Window:
    start: float
    """When the key's current window opened (the time of its last report)."""
    suppressed: int = 0
    """Events counted since then and not yet reported."""


class RateLimitedLog(Generic[K]):
    """One report per key per ``interval`` seconds, carrying the count of events."""

    def __init__(self, interval: float, *, max_keys: int = 1024) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self.interval = interval
        self.max_keys = max_keys
        self.evicted = 0
        """Suppressed events of keys forgotten because :attr:`max_keys` was reached."""
        self._windows: dict[K, _Window] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def hit(self, key: K, now: float) -> int | None:
        """Count one event of ``key``: the count to report now, or ``None`` (suppressed)."""
        window = self._windows.get(key)
        if window is not None and now < window.start + self.interval:
            window.suppressed += 1
            return None
        count = 1 + (window.suppressed if window is not None else 0)
        if window is None:
            if len(self._windows) >= self.max_keys:
                self._evict_one()
        else:
            del self._windows[key]  # re-insert: the dict stays ordered oldest first
        self._windows[key] = _Window(now)
        return count

    def flush(self, now: float) -> list[tuple[K, int]]:
        """Summaries due at ``now``: ``(key, suppressed count)`` of every ended window."""
        due: list[tuple[K, int]] = []
        idle: list[K] = []
        for key, window in self._windows.items():
            if now < window.start + self.interval:
                continue
            if window.suppressed:
                due.append((key, window.suppressed))
                window.start = now
                window.suppressed = 0
            else:
                idle.append(key)
        for key in idle:
            del self._windows[key]
        return due

    def drain(self) -> list[tuple[K, int]]:
        """Every suppressed count, due or not (at shutdown), and forget every key."""
        pending = [(k, w.suppressed) for k, w in self._windows.items() if w.suppressed]
        self._windows.clear()
        return pending

    def deadline(self) -> float | None:
        """When :meth:`flush` next returns a summary (``None``: nothing suppressed)."""
        ends = [w.start + self.interval for w in self._windows.values() if w.suppressed]
        return min(ends) if ends else None

    def _evict_one(self) -> None:
        oldest = next(iter(self._windows))
        self.evicted += self._windows.pop(oldest).suppressed
