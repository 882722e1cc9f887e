"""The freeze budget learns the path (fake clock, no sockets): a stall the path has shown
and survived is not a failure; a longer silence, a freeze for good, still is."""

from __future__ import annotations

import pytest

from rmfproxy.relay.health import Heartbeat

FPS = 25
STEP = 1 / FPS


def frames(hb: Heartbeat, start: float, seconds: float) -> float:
    """Deliver 25 fps frames for ``seconds``; the time of the last one."""
    t = start
    for _ in range(round(seconds * FPS)):
        hb.on_frame(t)
        t += STEP
    return t - STEP


def test_a_clean_lan_path_keeps_the_frame_budget() -> None:
    hb = Heartbeat()
    hb.set_path(rtt=0.0004, tcp=True)  # loopback/LAN: no loss recovery expected
    last = frames(hb, 0.0, 5.0)
    assert hb.budget(last) == pytest.approx(0.15)
    assert hb.overdue(last + 0.16)


def test_a_survived_stall_is_learned_and_tolerated_next_time() -> None:
    hb = Heartbeat()
    last = frames(hb, 0.0, 5.0)
    assert hb.overdue(last + 0.3)  # the first 300 ms stall looks like a freeze...
    last = frames(hb, last + 0.34, 5.0)  # ...but the same session delivers again
    assert hb.stalls() == 1
    assert hb.budget(last) == pytest.approx(1.2 * 0.34 + 0.05)
    # The path's next stall of the same length is not a failure.
    assert not hb.overdue(last + 0.34)
    # A source frozen for good is still declared frozen, within half a second.
    assert hb.overdue(last + 0.46)


def test_a_long_silence_that_recovered_is_a_failure_not_learned() -> None:
    hb = Heartbeat()
    last = frames(hb, 0.0, 5.0)
    last = frames(hb, last + 1.5, 5.0)  # a recorder frozen 1.5 s that came back
    assert hb.stalls() == 0
    assert hb.budget(last) == pytest.approx(0.15)


def test_stalls_are_forgotten_after_the_memory() -> None:
    hb = Heartbeat(memory=60.0)
    last = frames(hb, 0.0, 2.0)
    last = frames(hb, last + 0.5, 2.0)  # stall of 0.5 s at t≈2.5
    last = frames(hb, last + 0.3, 2.0)  # a shorter one later
    assert hb.budget(last) == pytest.approx(1.2 * 0.5 + 0.05)
    # 60 s after the long one, the shorter one sets the allowance; then none.
    assert hb.budget(2.5 + 61) == pytest.approx(1.2 * 0.3 + 0.05)
    assert hb.budget(last + 61) == pytest.approx(0.15)


def test_tcp_on_a_routed_path_is_allowed_one_loss_recovery_before_any_stall() -> None:
    hb = Heartbeat()
    hb.set_path(rtt=0.08, tcp=True)
    last = frames(hb, 0.0, 3.0)
    allowance = 0.2 + 3 * 0.08 + 2 * STEP
    assert hb.budget(last) == pytest.approx(allowance, abs=0.01)
    assert not hb.overdue(last + 0.36)  # a 300 ms retransmission stall plus a frame
    assert hb.overdue(last + allowance + 0.01)
    # Over UDP a lost packet does not hold the others back: the frame budget applies.
    hb.set_path(rtt=0.08, tcp=False)
    assert hb.budget(last) == pytest.approx(0.15)


def test_the_ceiling_bounds_what_is_learned_and_an_override_replaces_it() -> None:
    hb = Heartbeat(ceiling=0.3)
    last = frames(hb, 0.0, 2.0)
    last = frames(hb, last + 0.6, 2.0)
    assert hb.budget(last) == 0.3
    fixed = Heartbeat(override=0.8)
    last = frames(fixed, 0.0, 2.0)
    last = frames(fixed, last + 0.5, 2.0)
    assert fixed.budget(last) == 0.8
    assert not fixed.overdue(last + 0.79) and fixed.overdue(last + 0.81)


def test_a_reconnect_is_not_a_stall() -> None:
    hb = Heartbeat()
    last = frames(hb, 0.0, 2.0)
    hb.reset()  # a new session: the silence in between was a loss, known at once
    frames(hb, last + 0.5, 2.0)
    assert hb.stalls() == 0
