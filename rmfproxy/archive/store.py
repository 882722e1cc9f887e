"""The coverage journal's SQLite store: one row per interval a source covered.

Plain :mod:`sqlite3`, synchronous: the proxy drives it from one writer thread
(:mod:`rmfproxy.archive.runner`), ``rmfproxy coverage`` reads it directly. The
database runs in WAL mode, so readers (the CLI, another process) never block the
writer nor see a half-written transaction; ``synchronous=NORMAL`` (no fsync per
commit, only at checkpoints): a power loss may drop the last commits, which only
shortens the history, never corrupts it.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    cameras(camera PRIMARY KEY, since)      -- when the journal started watching it
    intervals(id, camera, source, start, end, open)

An open row (``open = 1``, at most one per camera and source) is the interval being
covered now; its ``end`` is the last heartbeat written (see
:mod:`rmfproxy.archive.journal`). :meth:`JournalStore.open` closes every row left open
by a process that died: it ends at that last heartbeat. An interval that starts where
a stored one of the same source ends, or inside it (a restart within the same second,
a wall clock stepped back), continues that row: history is merged across restarts.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from rmfproxy.archive.coverage import Interval, clip
from rmfproxy.archive.journal import Close, Extend, Op, Open

SCHEMA_VERSION = 1
"""Bumped on every incompatible change; a newer file is refused, an older one migrated."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cameras (
    camera TEXT PRIMARY KEY,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS intervals (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    source TEXT NOT NULL,
    start REAL NOT NULL,
    "end" REAL NOT NULL,
    open INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS intervals_by_end ON intervals (camera, "end");
CREATE INDEX IF NOT EXISTS intervals_open ON intervals (camera, source) WHERE open = 1;
"""


class JournalError(Exception):
    """The journal file cannot be used (missing, unreadable, not a journal, too new)."""


class JournalStore:
    """One connection to a journal file; not thread-safe (one owner thread)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.recovered = 0
        """Rows found open (a crash) and closed at their last heartbeat by :meth:`open`."""

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> JournalStore:
        """Open (``readonly``: an existing file, no writes) or create the journal at ``path``.

        A writer also closes the intervals a dead process left open (:attr:`recovered`).
        Raises :class:`JournalError` with a message naming the file.
        """
        path = Path(path)
        if readonly and not path.is_file():
            raise JournalError(f"no coverage journal at {path}")
        try:
            db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the coverage journal {path}: {exc}") from None
        store = cls(db, path)
        try:
            store._prepare(readonly)
        except sqlite3.Error as exc:
            db.close()
            raise JournalError(f"cannot use the coverage journal {path}: {exc}") from None
        except JournalError:
            db.close()
            raise
        return store

    def _prepare(self, readonly: bool) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the coverage journal {self.path} has schema version {version}, this "
                f"rmfproxy knows up to {SCHEMA_VERSION}: it was written by a newer version"
            )
        if readonly:
            if version == 0:
                raise JournalError(f"{self.path} is not a coverage journal (no schema)")
            db.execute("PRAGMA query_only = ON")
            return
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise JournalError(f"the coverage journal {self.path} cannot use WAL mode")
        db.execute("PRAGMA synchronous = NORMAL")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # Rows still open were being covered when a process died: they end at the
            # last heartbeat written, which is what their "end" already says.
            self.recovered = db.execute("UPDATE intervals SET open = 0 WHERE open = 1").rowcount
            db.execute('DELETE FROM intervals WHERE open = 0 AND "end" <= start')

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (a writer's WAL is checkpointed by SQLite)."""
        self._db.close()

    # writes --------------------------------------------------------------------

    def register(self, cameras: Iterable[str], now: float) -> None:
        """Cameras the journal watches from ``now`` on (a known camera keeps its date)."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO cameras (camera, since) VALUES (?, ?)",
                [(c, now) for c in cameras],
            )

    def apply(self, ops: Iterable[Op]) -> None:
        """Apply operations of :class:`~rmfproxy.archive.journal.JournalCore`, in one commit."""
        with self._transaction():
            for op in ops:
                if isinstance(op, Open):
                    self._open(op)
                elif isinstance(op, Extend):
                    self._extend(op.camera, op.source, op.end, still_open=True)
                elif isinstance(op, Close):
                    self._extend(op.camera, op.source, op.end, still_open=False)

    def _open(self, op: Open) -> None:
        db = self._db
        key = (op.camera, op.source)
        db.execute(
            "UPDATE intervals SET open = 0 WHERE camera = ? AND source = ? AND open = 1", key
        )
        row = db.execute(
            "SELECT id FROM intervals WHERE camera = ? AND source = ? AND start <= ? "
            'AND "end" >= ? ORDER BY "end" DESC LIMIT 1',
            (*key, op.start, op.start),
        ).fetchone()
        if row is not None:  # continues a stored interval: one row, not two
            db.execute("UPDATE intervals SET open = 1 WHERE id = ?", (row[0],))
        else:
            db.execute(
                'INSERT INTO intervals (camera, source, start, "end", open) VALUES (?, ?, ?, ?, 1)',
                (*key, op.start, op.start),
            )

    def _extend(self, camera: str, source: str, end: float, *, still_open: bool) -> None:
        db = self._db
        db.execute(
            'UPDATE intervals SET "end" = max("end", ?), open = ? '
            "WHERE camera = ? AND source = ? AND open = 1",
            (end, int(still_open), camera, source),
        )
        if not still_open:  # a source healthy for one sample only covered nothing
            db.execute(
                "DELETE FROM intervals WHERE camera = ? AND source = ? AND open = 0 "
                'AND "end" <= start',
                (camera, source),
            )

    def expire(self, before: float) -> int:
        """Delete closed intervals that ended before ``before``; how many went."""
        with self._transaction():
            cur = self._db.execute('DELETE FROM intervals WHERE open = 0 AND "end" < ?', (before,))
            return cur.rowcount

    # reads ---------------------------------------------------------------------

    def since(self, camera: str) -> float | None:
        """When the journal started watching ``camera`` (None: never)."""
        row = self._db.execute("SELECT since FROM cameras WHERE camera = ?", (camera,)).fetchone()
        return None if row is None else float(row[0])

    def intervals(self, camera: str, start: float, end: float) -> dict[str, list[Interval]]:
        """Per source, the normalized intervals of ``camera`` inside ``[start, end)``.

        An open interval ends at its last heartbeat here (the writer's memory knows
        more: :meth:`rmfproxy.archive.runner.CoverageJournal.intervals` adds it).
        """
        rows = self._db.execute(
            'SELECT source, start, "end" FROM intervals WHERE camera = ? AND "end" > ? '
            "AND start < ? ORDER BY start",
            (camera, start, end),
        ).fetchall()
        per: dict[str, list[Interval]] = {}
        for source, s, e in rows:
            per.setdefault(source, []).append((s, e))
        return {source: clip(ivs, start, end) for source, ivs in per.items()}

    def rows(self) -> list[tuple[str, str, float, float, bool]]:
        """Every row as ``(camera, source, start, end, open)`` (tests, debugging)."""
        return [
            (c, s, a, b, bool(o))
            for c, s, a, b, o in self._db.execute(
                'SELECT camera, source, start, "end", open FROM intervals ORDER BY camera, '
                "source, start"
            )
        ]
