"""Capped exponential backoff with full jitter (no I/O, no clock)."""

from __future__ import annotations

import random


class Backoff:
    """Delays between reconnect attempts: random in [0, min(maximum, initial * factor**n)]."""

    def __init__(
        self,
        initial: float = 0.25,
        maximum: float = 10.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows until ``maximum``."""
        cap = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt = min(self.attempt + 1, 64)
        # Full jitter, but never less than a tenth of the initial delay.
        return max(self.initial / 10, self._rng.uniform(0, cap))

    def reset(self) -> None:
        """A session worked: start again from ``initial``."""
        self.attempt = 0
