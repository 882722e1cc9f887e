"""The coverage journal's core: health samples in, interval operations out (no I/O, no clock).

Theory of operation. A sampler looks at every source of every camera at a steady pace
(about every 0.5 s) and tells :meth:`JournalCore.observe` whether the source was healthy
and the wall-clock time of the sample. The core keeps, per ``(camera, source)``, the
interval being covered now and answers with operations for the store:

* the first healthy sample **opens** an interval at that sample's time;
* further healthy samples move its end (``last_seen``) in memory; every ``heartbeat``
  seconds an **extend** writes that end to the store, so the store trails the truth by
  at most one heartbeat;
* the first unhealthy sample **closes** it at the last healthy sample's time.

So an interval runs from the first healthy sample to the last healthy one: a failure is
seen a sample late and a recovery a sample late, and the journal under-claims by up to
one sample period at each edge rather than claiming video that was not there. The one
over-claim is a crash: the store's row of an interval still open when the process died
ends at its last extend (:meth:`~rmfproxy.archive.store.JournalStore.open` closes it
there), which is at most ``heartbeat`` seconds (plus one sample) after the video really
stopped, or before it. A failure shorter than the sample period may go unseen.

The core never drops history: :meth:`close_all` closes every interval at its last
healthy sample (shutdown), and :meth:`live` lists the open ones with their in-memory
end, which is fresher than the store's (readers add them).
"""

from __future__ import annotations

from dataclasses import dataclass

HEARTBEAT = 5.0
"""Default seconds between writes of an open interval's end (the crash over-claim bound)."""


@dataclass(frozen=True)
class Open:
    """A source started covering: a new interval at ``start`` (its end is ``start`` too)."""

    camera: str
    source: str
    start: float
    """Time of the first healthy sample."""


@dataclass(frozen=True)
class Extend:
    """An open interval still covers: its stored end moves to ``end``."""

    camera: str
    source: str
    start: float
    """The interval's start (identifies it with camera and source)."""
    end: float
    """Time of the latest healthy sample."""


@dataclass(frozen=True)
class Close:
    """A source stopped covering: its open interval ends at ``end`` for good."""

    camera: str
    source: str
    start: float
    """The interval's start (identifies it with camera and source)."""
    end: float
    """Time of the last healthy sample."""

    @property
    def duration(self) -> float:
        """Seconds the interval covered."""
        return self.end - self.start


Op = Open | Extend | Close


@dataclass
class _Live:
    start: float
    last_seen: float
    written: float
    """The end the store has (start, or the last extend)."""


class JournalCore:
    """Turns health samples into interval operations; see the module docstring."""

    def __init__(self, heartbeat: float = HEARTBEAT) -> None:
        if heartbeat <= 0:
            raise ValueError(f"heartbeat must be positive, got {heartbeat}")
        self.heartbeat = heartbeat
        self._live: dict[tuple[str, str], _Live] = {}

    def observe(self, camera: str, source: str, healthy: bool, now: float) -> Op | None:
        """One sample of one source at wall time ``now``; the operation it causes, if any.

        Samples of one source must come in time order; a sample older than the source's
        last healthy one (the wall clock stepped back) is taken as taken at that time, so
        an interval never ends before it started or moves backwards.
        """
        key = (camera, source)
        live = self._live.get(key)
        if live is None:
            if not healthy:
                return None
            self._live[key] = _Live(now, now, now)
            return Open(camera, source, now)
        if not healthy:
            del self._live[key]
            return Close(camera, source, live.start, live.last_seen)
        live.last_seen = max(live.last_seen, now)
        if live.last_seen - live.written >= self.heartbeat:
            live.written = live.last_seen
            return Extend(camera, source, live.start, live.last_seen)
        return None

    def close_all(self) -> list[Close]:
        """Close every open interval at its last healthy sample (orderly shutdown)."""
        ops = [Close(c, s, live.start, live.last_seen) for (c, s), live in self._live.items()]
        self._live.clear()
        return ops

    def close_except(self, keep: set[tuple[str, str]]) -> list[Close]:
        """Close the open intervals of every (camera, source) not in ``keep`` (sources
        removed from the configuration) at their last healthy sample."""
        gone = [key for key in self._live if key not in keep]
        ops = [Close(c, s, self._live[c, s].start, self._live[c, s].last_seen) for c, s in gone]
        for key in gone:
            del self._live[key]
        return ops

    def live(self, camera: str | None = None) -> dict[tuple[str, str], tuple[float, float]]:
        """Open intervals as ``{(camera, source): (start, last healthy sample)}``."""
        return {
            key: (live.start, live.last_seen)
            for key, live in self._live.items()
            if camera is None or key[0] == camera
        }
