"""The coverage journal: the core with a fake clock, the SQLite store on a tmp_path file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rmfproxy.archive.journal import Close, Extend, JournalCore, Open
from rmfproxy.archive.store import SCHEMA_VERSION, JournalError, JournalStore

T0 = 1_800_000_000.0


def run(core: JournalCore, samples: list[tuple[float, bool]], source: str = "r1") -> list[object]:
    """Feed ``(time, healthy)`` samples of one source; the operations they caused."""
    return [op for t, ok in samples if (op := core.observe("cam", source, ok, T0 + t))]


# the core -------------------------------------------------------------------------


def test_interval_runs_from_first_to_last_healthy_sample() -> None:
    core = JournalCore(heartbeat=5.0)
    ops = run(core, [(0.0, False), (0.5, True), (1.0, True), (1.5, True), (2.0, False)])
    assert ops == [Open("cam", "r1", T0 + 0.5), Close("cam", "r1", T0 + 0.5, T0 + 1.5)]
    assert core.live() == {}
    assert run(core, [(2.5, False)]) == []  # stays closed


def test_extend_is_written_once_per_heartbeat_not_per_sample() -> None:
    core = JournalCore(heartbeat=5.0)
    ops = run(core, [(t * 0.5, True) for t in range(25)])  # 0 .. 12 s, healthy
    assert ops == [
        Open("cam", "r1", T0),
        Extend("cam", "r1", T0, T0 + 5.0),
        Extend("cam", "r1", T0, T0 + 10.0),
    ]
    assert core.live() == {("cam", "r1"): (T0, T0 + 12.0)}  # fresher than the store


def test_sources_and_cameras_are_independent() -> None:
    core = JournalCore()
    assert core.observe("a", "r1", True, T0) == Open("a", "r1", T0)
    assert core.observe("a", "r2", True, T0) == Open("a", "r2", T0)
    assert core.observe("b", "r1", True, T0) == Open("b", "r1", T0)
    assert core.observe("a", "r1", False, T0 + 1) == Close("a", "r1", T0, T0)
    assert core.live("a") == {("a", "r2"): (T0, T0)}
    assert sorted(core.live()) == [("a", "r2"), ("b", "r1")]


def test_close_all_ends_each_open_interval_at_its_last_healthy_sample() -> None:
    core = JournalCore()
    run(core, [(0.0, True), (3.0, True)], "r1")
    run(core, [(1.0, True), (2.0, True)], "r2")
    assert sorted(core.close_all(), key=lambda c: c.source) == [
        Close("cam", "r1", T0, T0 + 3.0),
        Close("cam", "r2", T0 + 1.0, T0 + 2.0),
    ]
    assert core.live() == {}


def test_wall_clock_stepping_back_never_moves_an_end_backwards() -> None:
    core = JournalCore(heartbeat=5.0)
    run(core, [(0.0, True), (4.0, True), (1.0, True)])
    assert core.live() == {("cam", "r1"): (T0, T0 + 4.0)}
    assert run(core, [(2.0, False)]) == [Close("cam", "r1", T0, T0 + 4.0)]


def test_heartbeat_must_be_positive() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        JournalCore(heartbeat=0)


# the store ------------------------------------------------------------------------


def test_store_open_extend_close_and_read(tmp_path: Path) -> None:
    store = JournalStore.open(tmp_path / "j.sqlite")
    store.apply([Open("cam", "r1", T0), Open("cam", "r2", T0 + 1)])
    store.apply([Extend("cam", "r1", T0, T0 + 5)])
    assert store.rows() == [
        ("cam", "r1", T0, T0 + 5, True),
        ("cam", "r2", T0 + 1, T0 + 1, True),
    ]
    store.apply([Close("cam", "r1", T0, T0 + 7), Close("cam", "r2", T0 + 1, T0 + 9)])
    store.apply([Open("cam", "r1", T0 + 12), Close("cam", "r1", T0 + 12, T0 + 20)])
    assert store.intervals("cam", T0, T0 + 100) == {
        "r1": [(T0, T0 + 7), (T0 + 12, T0 + 20)],
        "r2": [(T0 + 1, T0 + 9)],
    }
    assert store.intervals("cam", T0 + 5, T0 + 15) == {
        "r1": [(T0 + 5, T0 + 7), (T0 + 12, T0 + 15)],
        "r2": [(T0 + 5, T0 + 9)],
    }
    assert store.intervals("other", T0, T0 + 100) == {}
    store.close()


def test_a_single_healthy_sample_leaves_no_row(tmp_path: Path) -> None:
    store = JournalStore.open(tmp_path / "j.sqlite")
    store.apply([Open("cam", "r1", T0), Close("cam", "r1", T0, T0)])
    assert store.rows() == []
    store.close()


def test_restart_closes_an_interval_left_open_at_its_last_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    crashed = JournalStore.open(path)
    crashed.apply([Open("cam", "r1", T0), Extend("cam", "r1", T0, T0 + 10)])
    # the process dies here: the interval was really healthy until about T0 + 14
    del crashed
    store = JournalStore.open(path)
    assert store.recovered == 1
    assert store.rows() == [("cam", "r1", T0, T0 + 10, False)]  # over-claims nothing after 10
    store.close()


def test_intervals_that_touch_or_overlap_across_restarts_join(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    first = JournalStore.open(path)
    first.apply([Open("cam", "r1", T0), Close("cam", "r1", T0, T0 + 10)])
    first.close()
    second = JournalStore.open(path)
    # starts where the stored one ends (a quick restart): one row, extended
    second.apply([Open("cam", "r1", T0 + 10), Close("cam", "r1", T0 + 10, T0 + 15)])
    # the wall clock stepped back: starts inside the stored interval
    second.apply([Open("cam", "r1", T0 + 14), Extend("cam", "r1", T0 + 14, T0 + 20)])
    # a real gap keeps its own row
    second.apply([Close("cam", "r1", T0 + 14, T0 + 21), Open("cam", "r1", T0 + 30)])
    assert second.rows() == [
        ("cam", "r1", T0, T0 + 21, False),
        ("cam", "r1", T0 + 30, T0 + 30, True),
    ]
    second.close()


def test_retention_deletes_closed_rows_that_ended_before_the_cutoff(tmp_path: Path) -> None:
    store = JournalStore.open(tmp_path / "j.sqlite")
    store.apply([Open("cam", "r1", T0), Close("cam", "r1", T0, T0 + 10)])
    store.apply([Open("cam", "r1", T0 + 20), Close("cam", "r1", T0 + 20, T0 + 30)])
    store.apply([Open("cam", "r2", T0), Extend("cam", "r2", T0, T0 + 5)])  # open: kept
    assert store.expire(T0 + 15) == 1
    assert store.rows() == [
        ("cam", "r1", T0 + 20, T0 + 30, False),
        ("cam", "r2", T0, T0 + 5, True),
    ]
    assert store.expire(T0 + 25) == 0  # ends after the cutoff: kept whole
    store.close()


def test_cameras_keep_the_date_they_were_first_watched(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    store = JournalStore.open(path)
    store.register(["a"], T0)
    store.close()
    store = JournalStore.open(path)
    store.register(["a", "b"], T0 + 100)
    assert (store.since("a"), store.since("b"), store.since("c")) == (T0, T0 + 100, None)
    store.close()


def test_wal_mode_and_a_reader_while_the_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    writer = JournalStore.open(path)
    writer.apply([Open("cam", "r1", T0), Extend("cam", "r1", T0, T0 + 5)])
    reader = JournalStore.open(path, readonly=True)
    assert reader.intervals("cam", T0, T0 + 10) == {"r1": [(T0, T0 + 5)]}
    writer.apply([Extend("cam", "r1", T0, T0 + 10)])
    assert reader.intervals("cam", T0, T0 + 10) == {"r1": [(T0, T0 + 10)]}
    with pytest.raises(sqlite3.OperationalError):  # query_only
        reader.expire(T0 + 100)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    reader.close()
    writer.close()


def test_unusable_files_are_refused_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no coverage journal at"):
        JournalStore.open(tmp_path / "missing.sqlite", readonly=True)
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(JournalError, match="newer version"):
        JournalStore.open(newer)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JournalError, match=r"garbage\.sqlite"):
        JournalStore.open(garbage)
    with pytest.raises(JournalError, match="cannot open"):
        JournalStore.open(tmp_path / "no-such-dir" / "j.sqlite")
