"""The coverage journal in a running proxy: a sampler task, one writer thread, a summary.

* The sampler (an asyncio task) reads every source's health every
  :data:`SAMPLE_INTERVAL` seconds through a callable the composition root provides
  (``(camera, source, healthy)`` triples; this module imports nothing of the feed),
  stamps the samples with the wall clock and feeds :class:`JournalCore`.
* Every store call runs on **one writer thread** that owns the SQLite connection, in
  the order it was submitted: the event loop only appends to a queue (a few µs), so a
  slow commit or a WAL checkpoint (an fsync) never stalls packets. Reads go through the
  same queue, so a read sees every write submitted before it. :attr:`write_stats`
  measures the cost on both sides.
* A summary per camera (seconds of the retention window no source covered, each
  source's coverage ratio over the last hour) is recomputed every
  :data:`SUMMARY_INTERVAL` seconds on the writer thread; metrics read the cached dict
  at scrape time and never touch SQLite.

Readers get the stored intervals plus the open ones as the core knows them (ending at
their last healthy sample, fresher than the store's last heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import structlog

from rmfproxy.archive.coverage import Interval, clip, coverage_ratio, covered_seconds, union
from rmfproxy.archive.journal import HEARTBEAT, Close, JournalCore, Op
from rmfproxy.archive.store import JournalError, JournalStore

log = structlog.get_logger(__name__)

T = TypeVar("T")

SAMPLE_INTERVAL = 0.5
"""Seconds between health samples: the resolution of the journal."""
SUMMARY_INTERVAL = 10.0
"""Seconds between recomputations of the metrics' summary."""
EXPIRE_INTERVAL = 600.0
"""Seconds between deletions of rows older than the retention."""
RATIO_WINDOW = 3600.0
"""The per-source coverage ratio of the metrics is over this many seconds."""

Sample = tuple[str, str, bool]
"""``(camera, source, healthy)``."""


@dataclass
class CameraSummary:
    """What the metrics export for one camera (plain data, computed off the loop)."""

    uncovered_seconds: float
    """Seconds of ``[max(now - retention, watched since), now)`` covered by no source."""
    ratios: dict[str, float]
    """Per source, covered fraction of the last hour (or of the time watched, if less)."""


@dataclass
class WriteStats:
    """What journal writes cost: on the writer thread and on the event loop."""

    batches: int = 0
    ops: int = 0
    thread_seconds: float = 0.0
    """Total time the writer thread spent applying batches (commit included)."""
    thread_max_seconds: float = 0.0
    loop_seconds: float = 0.0
    """Total time the event loop spent sampling and queueing (what the proxy feels)."""
    loop_max_seconds: float = 0.0
    errors: int = 0
    recent: list[float] = field(default_factory=list)
    """The last 100 batch durations on the writer thread."""


class CoverageJournal:
    """The journal of one proxy; :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        path: str | Path,
        *,
        cameras: dict[str, list[str]],
        sample: Callable[[], Iterable[Sample]],
        retention: float,
        heartbeat: float = HEARTBEAT,
        sample_interval: float = SAMPLE_INTERVAL,
        summary_interval: float = SUMMARY_INTERVAL,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.cameras = cameras
        """Configured source names per camera, in priority order."""
        self.retention = retention
        self.sample_interval = sample_interval
        self.summary_interval = summary_interval
        self.core = JournalCore(heartbeat)
        self.summary: dict[str, CameraSummary] = {}
        """Per camera, the latest summary (empty until the first one is computed)."""
        self.write_stats = WriteStats()
        self._sample = sample
        self._wall = wall
        self._queue: queue.SimpleQueue[Callable[[JournalStore | None], None] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._store: JournalStore | None = None
        self._since: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_expire = 0.0

    # lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (closing what a crash left open), then start sampling.

        Raises :class:`JournalError` naming the file if it cannot be used.
        """
        self._thread = threading.Thread(target=self._writer, name="coverage-journal", daemon=True)
        self._thread.start()
        try:
            recovered = await self._call(self._open_store)
        except BaseException:
            await self._join()
            raise
        log.info(
            "archive.journal_opened",
            path=str(self.path),
            recovered_open_intervals=recovered,
            retention_s=self.retention,
        )
        await self.refresh_summary()
        self._tasks = [
            asyncio.create_task(self._sampler(), name="coverage-sampler"),
            asyncio.create_task(self._maintainer(), name="coverage-maintainer"),
        ]

    def _open_store(self, _: JournalStore | None) -> int:
        store = JournalStore.open(self.path)
        self._store = store
        now = self._wall()
        store.register(self.cameras, now)
        self._since = {cam: store.since(cam) or now for cam in self.cameras}
        store.expire(now - self.retention)
        return store.recovered

    async def stop(self) -> None:
        """Stop sampling, close every open interval at its last healthy sample, close."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._thread is None:
            return
        closes = self.core.close_all()
        for op in closes:
            self._log_close(op)
        if closes:
            self._submit(lambda store: store.apply(closes))
        await self._join()

    async def _join(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(thread.join)

    # the writer thread -------------------------------------------------------------

    def _writer(self) -> None:
        """Run submitted jobs in order until stopped; then close the store."""
        while True:
            job = self._queue.get()
            if job is None:
                break
            job(self._store)
        if self._store is not None:
            self._store.close()
            self._store = None

    def _submit(self, fn: Callable[[JournalStore], object]) -> None:
        """Queue a write; never waits (a failure is counted and logged by the thread)."""

        def job(store: JournalStore | None) -> None:
            try:
                fn(_required(store))
            except Exception as exc:  # the loop does not wait for writes: log it here
                self.write_stats.errors += 1
                log.error("archive.journal_write_failed", path=str(self.path), error=str(exc))

        self._queue.put(job)

    async def _call(self, fn: Callable[[JournalStore | None], T]) -> T:
        """Run ``fn(store)`` on the writer thread after everything queued before it."""
        if self._thread is None:
            raise JournalError("the coverage journal is not running")
        future: Future[T] = Future()

        def job(store: JournalStore | None) -> None:
            try:
                future.set_result(fn(store))
            except BaseException as exc:  # reported to the caller
                future.set_exception(exc)

        self._queue.put(job)
        return await asyncio.wrap_future(future)

    # sampling ---------------------------------------------------------------------

    async def _sampler(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.sample_interval)
                self.tick()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("archive.sampler_failed")
            raise

    def tick(self) -> list[Op]:
        """Sample every source once and queue what changed (the sampler calls this)."""
        t0 = time.perf_counter()
        now = self._wall()
        ops: list[Op] = []
        for camera, source, healthy in self._sample():
            op = self.core.observe(camera, source, healthy, now)
            if op is not None:
                ops.append(op)
        if ops:
            for op in ops:
                if isinstance(op, Close):
                    self._log_close(op)
            self._submit(self._timed_apply(ops))
        spent = time.perf_counter() - t0
        stats = self.write_stats
        stats.loop_seconds += spent
        stats.loop_max_seconds = max(stats.loop_max_seconds, spent)
        return ops

    def _timed_apply(self, ops: list[Op]) -> Callable[[JournalStore], None]:
        def apply(store: JournalStore) -> None:
            t0 = time.perf_counter()
            store.apply(ops)
            spent = time.perf_counter() - t0
            stats = self.write_stats
            stats.batches += 1
            stats.ops += len(ops)
            stats.thread_seconds += spent
            stats.thread_max_seconds = max(stats.thread_max_seconds, spent)
            stats.recent = [*stats.recent[-99:], spent]

        return apply

    @staticmethod
    def _log_close(op: Close) -> None:
        log.info(
            "archive.coverage_closed",
            camera=op.camera,
            source=op.source,
            duration=round(op.duration, 3),
        )

    def set_cameras(self, cameras: dict[str, list[str]]) -> None:
        """The configured cameras changed (live reconfiguration): watch the new ones from
        now on; history of removed ones stays until retention expires it."""
        now = self._wall()
        new = [c for c in cameras if c not in self.cameras]
        self.cameras = dict(cameras)
        for cam in new:
            self._since.setdefault(cam, now)
        if new:
            self._submit(lambda store: store.register(new, now))
        closed = self.core.close_except({(c, src) for c, srcs in cameras.items() for src in srcs})
        if closed:
            for op in closed:
                self._log_close(op)
            self._submit(self._timed_apply(list(closed)))

    # reads ------------------------------------------------------------------------

    def history_start(self, camera: str) -> float:
        """Where the camera's retained history begins: when the journal first watched
        it, or the retention horizon, whichever is later (npt 0 of a playback)."""
        now = self._wall()
        return max(now - self.retention, self._since.get(camera, now))

    async def intervals(self, camera: str, start: float, end: float) -> dict[str, list[Interval]]:
        """Per source of ``camera``, the normalized intervals it covered in ``[start, end)``.

        Every configured source is a key (an empty list: no coverage). Includes the
        intervals still open, up to their last healthy sample.
        """
        live = self.core.live(camera)  # now, so that closes queued later are not missed
        stored = await self._call(lambda store: _required(store).intervals(camera, start, end))
        return _with_live(self.cameras.get(camera, []), stored, live, start, end)

    async def refresh_summary(self) -> None:
        """Recompute :attr:`summary` (on the writer thread); the maintainer calls it."""
        now = self._wall()
        live = self.core.live()
        since = dict(self._since)

        def compute(store: JournalStore | None) -> dict[str, CameraSummary]:
            st = _required(store)
            out = {}
            for camera, sources in self.cameras.items():
                window = max(now - self.retention, since.get(camera, now))
                per = _with_live(sources, st.intervals(camera, window, now), live, window, now)
                uncovered = (now - window) - covered_seconds(union(per.values()))
                hour = max(now - RATIO_WINDOW, since.get(camera, now))
                out[camera] = CameraSummary(
                    uncovered_seconds=max(0.0, uncovered),
                    ratios={s: coverage_ratio(ivs, hour, now) for s, ivs in per.items()},
                )
            return out

        self.summary = await self._call(compute)

    async def _maintainer(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.summary_interval)
                now = self._wall()
                if now - self._last_expire >= min(EXPIRE_INTERVAL, self.retention / 10):
                    self._last_expire = now
                    self._submit(_expire(now - self.retention))
                await self.refresh_summary()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("archive.maintainer_failed")
            raise


def _expire(before: float) -> Callable[[JournalStore], int]:
    return lambda store: store.expire(before)


def _required(store: JournalStore | None) -> JournalStore:
    if store is None:
        raise JournalError("the coverage journal is not open")
    return store


def _with_live(
    sources: list[str],
    stored: dict[str, list[Interval]],
    live: dict[tuple[str, str], tuple[float, float]],
    start: float,
    end: float,
) -> dict[str, list[Interval]]:
    """Stored intervals plus the open ones, clipped; one key per configured source."""
    per = {s: list(stored.get(s, [])) for s in sources}
    for s, ivs in stored.items():
        per.setdefault(s, list(ivs))
    for (_, source), interval in live.items():
        per.setdefault(source, []).append(interval)
    return {s: clip(ivs, start, end) for s, ivs in per.items()}
