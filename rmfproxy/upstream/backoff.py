"""Capped exponential backoff with full jitter (no I/O, no clock).

Delay ``n`` (counting from 0) is drawn uniformly from ``[0, min(maximum, initial * factor**n)]``
("full jitter"), so that many sources that lost the same recorder at the same moment do
not all reconnect in lockstep. A tenth of ``initial`` is the floor, so a source never spins.
"""

from __future__ import annotations

import math
import random

_JITTER = random.Random()
"""The jitter of every backoff without its own generator: one shared generator, not one
per source (a Mersenne Twister's state is 2.5 KB)."""


class Backoff:
    """Delays between reconnect attempts; :meth:`reset` after a session that worked."""

    def __init__(
        self,
        initial: float = 0.25,
        maximum: float = 10.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not (0 < initial <= maximum) or not math.isfinite(maximum) or not factor >= 1:
            raise ValueError("backoff needs 0 < initial <= maximum (finite) and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._rng = rng if rng is not None else _JITTER
        self.attempt = 0
        """Attempts since the last :meth:`reset` (stops growing once the cap is reached)."""

    def cap(self) -> float:
        """The upper bound of the next delay: ``min(maximum, initial * factor**attempt)``."""
        if self.attempt == 0 or self.factor == 1:
            return self.initial
        # Compare in logs first, so that a large factor or attempt cannot overflow a float.
        if self.attempt * math.log(self.factor) >= math.log(self.maximum / self.initial):
            return self.maximum
        return min(self.maximum, self.initial * self.factor**self.attempt)

    def next_delay(self) -> float:
        """The delay before the next attempt, and count that attempt."""
        cap = self.cap()
        if cap < self.maximum and self.factor > 1:
            self.attempt += 1  # stops once the cap is reached: no unbounded growth
        return max(self.initial / 10, self._rng.uniform(0, cap))

    def reset(self) -> None:
        """A session worked: the next delay is drawn from ``[0, initial]`` again."""
        self.attempt = 0
