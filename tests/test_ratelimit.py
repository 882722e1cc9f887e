"""RateLimitedLog: one report per key per interval with the count, stepped with explicit times."""

from __future__ import annotations

import pytest

from rmfproxy.ratelimit import RateLimitedLog


def test_first_event_reports_then_suppresses_then_summarises() -> None:
    lim: RateLimitedLog[str] = RateLimitedLog(10.0)
    assert lim.hit("a", 100.0) == 1
    assert [lim.hit("a", 100.0 + i / 1000) for i in range(1, 907)] == [None] * 906
    assert lim.deadline() == 110.0
    assert lim.flush(109.9) == []
    assert lim.flush(110.0) == [("a", 906)]
    # The summary opened a new window: still one line per interval.
    assert lim.hit("a", 110.5) is None
    assert lim.deadline() == 120.0
    # A hit after the window ended reports itself and what the window suppressed.
    assert lim.hit("a", 120.0) == 2
    assert lim.deadline() is None


def test_keys_are_independent_and_idle_keys_are_forgotten() -> None:
    lim: RateLimitedLog[str] = RateLimitedLog(1.0)
    assert lim.hit("a", 0.0) == 1
    assert lim.hit("b", 0.5) == 1
    assert lim.hit("a", 0.6) is None
    assert lim.flush(1.0) == [("a", 1)]
    assert lim.flush(1.6) == []
    assert lim.flush(2.0) == []
    assert len(lim) == 0
    assert lim.hit("a", 2.1) == 1


def test_drain_reports_everything_suppressed() -> None:
    lim: RateLimitedLog[str] = RateLimitedLog(60.0)
    lim.hit("a", 0.0)
    lim.hit("a", 1.0)
    lim.hit("b", 1.0)
    assert lim.drain() == [("a", 1)]
    assert len(lim) == 0 and lim.deadline() is None


def test_key_count_is_bounded() -> None:
    lim: RateLimitedLog[int] = RateLimitedLog(60.0, max_keys=3)
    for k in range(3):
        assert lim.hit(k, 0.0) == 1
        assert lim.hit(k, 0.1) is None
    assert lim.hit(3, 0.2) == 1
    assert len(lim) == 3 and lim.evicted == 1
    assert lim.hit(0, 0.3) == 1  # forgotten: reported again


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="interval"):
        RateLimitedLog(0)
    with pytest.raises(ValueError, match="max_keys"):
        RateLimitedLog(1.0, max_keys=0)
