"""The coverage journal as the proxy runs it: a fake wall clock, samples set by the test."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from rmfproxy.archive.runner import CoverageJournal
from rmfproxy.archive.store import JournalError, JournalStore

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def make(path: Path, clock: Clock, health: dict[str, bool], **kw: float) -> CoverageJournal:
    """A journal of camera 'cam' with the sources in ``health``; the test calls tick()."""
    return CoverageJournal(
        path,
        cameras={"cam": list(health)},
        sample=lambda: [("cam", s, ok) for s, ok in health.items()],
        retention=kw.pop("retention", 86400.0),
        sample_interval=3600.0,  # the sampler task never runs: the test ticks
        summary_interval=3600.0,
        wall=clock,
        **kw,
    )


def steps(journal: CoverageJournal, clock: Clock, until: float, every: float = 0.5) -> None:
    while clock.t < T0 + until - 1e-9:
        clock.t = round(clock.t + every, 6)
        journal.tick()


async def test_transitions_become_intervals_and_outlive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    clock = Clock()
    health = {"r1": True, "r2": True}
    journal = make(path, clock, health)
    await journal.start()  # registers the camera at T0
    journal.tick()  # T0: both open
    steps(journal, clock, 10)
    health["r1"] = False
    with structlog.testing.capture_logs() as logs:
        steps(journal, clock, 13)  # first unhealthy sample at 10.5: closed at 10.0
    assert [e for e in logs if e["event"] == "archive.coverage_closed"] == [
        {
            "event": "archive.coverage_closed",
            "log_level": "info",
            "camera": "cam",
            "source": "r1",
            "duration": 10.0,
        }
    ]
    health["r1"] = True
    steps(journal, clock, 20)
    health["r2"] = False
    steps(journal, clock, 22)
    health["r2"] = True
    steps(journal, clock, 30)
    expected = {
        "r1": [(T0, T0 + 10.0), (T0 + 13.5, T0 + 30.0)],
        "r2": [(T0, T0 + 20.0), (T0 + 22.5, T0 + 30.0)],
    }
    # open intervals reach their last healthy sample, not the last heartbeat written
    assert await journal.intervals("cam", T0 - 5, T0 + 40) == expected
    await journal.refresh_summary()
    summary = journal.summary["cam"]
    assert summary.uncovered_seconds == 0.0  # r2 covered r1's hole and the reverse
    assert summary.ratios == pytest.approx({"r1": 26.5 / 30, "r2": 27.5 / 30})
    await journal.stop()

    again = make(path, clock, {"r1": False, "r2": False})
    await again.start()
    assert await again.intervals("cam", T0 - 5, T0 + 40) == expected
    clock.t = T0 + 40
    await again.refresh_summary()
    assert again.summary["cam"].uncovered_seconds == pytest.approx(10.0)  # 30..40: down
    await again.stop()


async def test_a_crash_over_claims_at_most_one_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    clock = Clock()
    journal = make(path, clock, {"r1": True}, heartbeat=5.0)
    await journal.start()
    journal.tick()
    steps(journal, clock, 12)  # extends written at 5 and 10; healthy until 12
    assert await journal.intervals("cam", T0, T0 + 60) == {"r1": [(T0, T0 + 12.0)]}
    journal.core.close_all()  # the process dies: what it knew in memory is lost
    await journal.stop()
    again = make(path, clock, {"r1": False})
    with structlog.testing.capture_logs() as logs:
        await again.start()
    assert [e["recovered_open_intervals"] for e in logs if "recovered_open_intervals" in e] == [1]
    assert await again.intervals("cam", T0, T0 + 60) == {"r1": [(T0, T0 + 10.0)]}
    await again.stop()


async def test_every_configured_source_is_reported_even_without_coverage(tmp_path: Path) -> None:
    clock = Clock()
    journal = make(tmp_path / "j.sqlite", clock, {"r1": True, "r2": False})
    await journal.start()
    journal.tick()
    steps(journal, clock, 2)
    assert await journal.intervals("cam", T0, T0 + 5) == {"r1": [(T0, T0 + 2.0)], "r2": []}
    assert await journal.intervals("nope", T0, T0 + 5) == {}
    await journal.stop()
    with pytest.raises(JournalError, match="not running"):
        await journal.intervals("cam", T0, T0 + 5)


async def test_retention_expires_old_history_at_start(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    clock = Clock()
    journal = make(path, clock, {"r1": True}, retention=3600.0)
    await journal.start()
    journal.tick()
    steps(journal, clock, 10)
    await journal.stop()
    clock.t = T0 + 3600 + 11  # the interval ended more than an hour ago
    again = make(path, clock, {"r1": False}, retention=3600.0)
    await again.start()
    assert await again.intervals("cam", T0, clock.t) == {"r1": []}
    await again.stop()
    store = JournalStore.open(path, readonly=True)
    assert store.rows() == []
    store.close()


async def test_writes_run_on_the_writer_thread_and_are_measured(tmp_path: Path) -> None:
    clock = Clock()
    journal = make(tmp_path / "j.sqlite", clock, {"r1": True})
    await journal.start()
    journal.tick()
    health_flips = 0
    for i in range(40):
        clock.t += 0.5
        journal._sample = lambda i=i: [("cam", "r1", i % 2 == 0)]  # type: ignore[misc]
        health_flips += 1 if journal.tick() else 0
    await journal.intervals("cam", T0, clock.t)  # after every queued write
    stats = journal.write_stats
    assert stats.batches == health_flips + 1 and stats.errors == 0
    assert stats.thread_seconds > 0 and stats.loop_seconds > 0
    await journal.stop()


async def test_an_unusable_file_fails_start_and_leaves_no_thread(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    journal = make(bad, Clock(), {"r1": True})
    with pytest.raises(JournalError, match=r"bad\.sqlite"):
        await journal.start()
    assert journal._thread is None
    await journal.stop()  # harmless
