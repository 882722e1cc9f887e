"""The probe's frame accounting: what the e2e tests count duplicated or missing frames by."""

from __future__ import annotations

from rmfproxy.sim.probe import ProbeResult


def result(counters: list[int | None], frames: int | None = None) -> ProbeResult:
    r = ProbeResult()
    r.counters = counters
    r.frames_decoded = len(counters) if frames is None else frames
    return r


def test_a_clean_run_is_consecutive_and_within_its_span() -> None:
    r = result([7, 8, 9, 10])
    assert r.consecutive() and r.beyond_span() == 0


def test_a_frame_sent_twice_is_repeated_and_beyond_the_span() -> None:
    r = result([7, 8, 8, 9])
    assert r.repeated() == 1 and r.lost() == 0 and r.beyond_span() == 1


def test_a_repeat_whose_counter_was_not_read_is_still_beyond_the_span() -> None:
    r = result([7, 8, None, 9])
    assert r.repeated() == 0 and r.beyond_span() == 1


def test_a_lost_frame_is_counted_and_not_beyond_the_span() -> None:
    r = result([7, 9, 10])
    assert r.lost() == 1 and r.beyond_span() == -1
