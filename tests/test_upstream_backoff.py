"""Reconnect backoff: full jitter under a cap that doubles up to the maximum, and resets."""

from __future__ import annotations

import random

import pytest

from rmfproxy.upstream.backoff import Backoff


class _Top(random.Random):
    """Always draws the upper bound, so the cap itself is observable."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _Bottom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_cap_doubles_until_the_maximum() -> None:
    b = Backoff(0.25, 10.0, 2.0, rng=_Top())
    delays = [b.next_delay() for _ in range(10)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]


def test_full_jitter_stays_within_floor_and_cap() -> None:
    b = Backoff(0.25, 10.0, rng=random.Random(7))
    caps = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0] + [10.0] * 50
    delays = [b.next_delay() for _ in caps]
    assert all(0.025 <= d <= c for d, c in zip(delays, caps, strict=True))
    # Jitter: the delays at the cap are spread out, not all equal.
    assert len({round(d, 6) for d in delays[6:]}) > 40
    assert max(delays[6:]) > 5.0 and min(delays[6:]) < 5.0


def test_floor_is_a_tenth_of_initial() -> None:
    b = Backoff(1.0, 4.0, rng=_Bottom())
    assert [b.next_delay() for _ in range(3)] == [0.1, 0.1, 0.1]


def test_reset_starts_again_from_initial() -> None:
    b = Backoff(0.25, 10.0, rng=_Top())
    for _ in range(8):
        b.next_delay()
    assert b.cap() == 10.0
    b.reset()
    assert b.attempt == 0 and b.cap() == 0.25
    assert b.next_delay() == 0.25 and b.next_delay() == 0.5


def test_same_seed_same_delays() -> None:
    one = Backoff(rng=random.Random(3))
    two = Backoff(rng=random.Random(3))
    assert [one.next_delay() for _ in range(20)] == [two.next_delay() for _ in range(20)]


def test_huge_factor_and_many_attempts_do_not_overflow() -> None:
    b = Backoff(0.1, 60.0, factor=1e300, rng=_Top())
    assert [b.next_delay() for _ in range(3)] == [0.1, 60.0, 60.0]
    assert b.attempt == 1  # stopped counting at the cap
    slow = Backoff(0.1, 60.0, factor=1.0, rng=_Top())
    assert [slow.next_delay() for _ in range(1000)] == [0.1] * 1000
    assert slow.attempt == 0  # a factor of 1 never grows: nothing to count


@pytest.mark.parametrize(
    ("initial", "maximum", "factor"),
    [(0, 1, 2), (-1, 1, 2), (2, 1, 2), (1, 2, 0.5), (1, float("inf"), 2), (float("nan"), 1, 2)],
)
def test_invalid_parameters_are_refused(initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial, maximum, factor)
