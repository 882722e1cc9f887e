"""Switch policy and heartbeat, stepped with a fake clock (no sockets)."""

from __future__ import annotations

import pytest

from rmfproxy.relay.health import Heartbeat
from rmfproxy.relay.policy import Decision, Reason, SwitchPolicy


def test_freeze_budget_follows_frame_interval_and_jitter() -> None:
    hb = Heartbeat(floor=0.05, ceiling=2.0)
    assert not hb.overdue(100.0)  # never heard: not frozen, just not healthy yet
    t = 0.0
    for _ in range(50):
        hb.on_frame(t)
        t += 0.04
    assert hb.interval == pytest.approx(0.04, abs=1e-6)
    assert hb.budget() == pytest.approx(0.1, abs=0.01)  # 2.5 frame intervals
    last = t - 0.04
    assert not hb.overdue(last + 0.09) and hb.overdue(last + 0.11)
    # A 1 fps camera gets a longer budget; the ceiling caps it.
    slow = Heartbeat(floor=0.05, ceiling=2.0)
    for i in range(10):
        slow.on_frame(float(i))
    assert slow.budget() == 2.0
    # Jitter widens the budget.
    jittery = Heartbeat(floor=0.05, ceiling=2.0)
    t = 0.0
    for i in range(200):
        jittery.on_frame(t)
        t += 0.02 if i % 2 else 0.06
    assert jittery.budget() > 0.15


def test_failover_to_highest_priority_healthy() -> None:
    p = SwitchPolicy(3, failback_hold=10)
    assert p.decide(0, [False, True, True], None) == Decision(1, Reason.INITIAL)
    assert p.decide(1, [False, True, True], 1) is None
    assert p.decide(2, [False, False, True], 1) == Decision(2, Reason.FAILOVER)
    assert p.decide(3, [False, False, False], 2) is None  # nothing to switch to: wait


def test_failback_only_after_hold_down() -> None:
    p = SwitchPolicy(2, failback_hold=10)
    p.decide(0, [False, True], 1)
    assert p.decide(5, [True, True], 1) is None
    assert p.decide(14.9, [True, True], 1) is None
    # A flap resets the hold-down.
    assert p.decide(15, [False, True], 1) is None
    assert p.decide(16, [True, True], 1) is None
    assert p.decide(25.9, [True, True], 1) is None
    assert p.decide(26, [True, True], 1) == Decision(0, Reason.FAILBACK)


def test_manual_pin_and_release() -> None:
    p = SwitchPolicy(2, failback_hold=0)
    assert p.decide(0, [True, True], 0) is None
    p.set_manual(1)
    assert p.decide(1, [True, True], 0) == Decision(1, Reason.MANUAL)
    assert p.decide(2, [True, True], 1) is None
    # The pinned source fails: automatic failover still protects the picture.
    assert p.decide(3, [True, False], 1) == Decision(0, Reason.FAILOVER)
    p.set_manual(None)
    assert p.decide(4, [True, True], 0) is None
    with pytest.raises(ValueError, match="no source 5"):
        p.set_manual(5)
