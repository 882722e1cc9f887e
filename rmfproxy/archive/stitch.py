"""Stitching recorded video from several recorders into one sequence of access units.

No I/O and no clock: the caller passes the window, the journal's intervals and the
frames each recorder returned.

Theory of operation. Two steps.

1. :func:`plan` turns the coverage journal's intervals (per source, in priority order)
   into spans of ``[start, end)``: each instant goes to the highest-priority source the
   journal says covered it, instants no source covered are a span with ``source=None``.
   The plan decides only *what to fetch* (:func:`fetch_ranges` widens it by a margin):
   the journal is written from health samples every 0.5 s and a source is declared
   down a few hundred milliseconds after its last frame, so its intervals over-claim
   by up to about a second. The frames themselves are the ground truth.

2. :func:`stitch` walks the frames the sources returned. A source's frames form
   *runs*: contiguous recording, cut where the recorder flagged a gap (0xABAC D on a
   frame, E on the one before) or where capture times jump by more than
   ``gap_factor`` frame intervals. The current source is followed frame by frame;

   - *failback*: when a higher-priority source has a keyframe at the next frame's
     instant, the stitched stream continues on it there (a seam at its keyframe);
   - *takeover*: when the current source has nothing more (its run ended, or it was
     never chosen), the highest-priority source whose latest keyframe at or before the
     next needed instant lies in a run that goes on past the last frame sent takes
     over **at that keyframe**. If the keyframe is earlier than the last frame sent,
     the frames sent from that instant on are taken back (the new source carries the
     same pictures), so no capture time repeats, none goes backwards, and the seam is
     on the new source's keyframe;
   - *gap*: when no source can take over, the earliest keyframe any source has after
     the last frame sent starts the next part: the frame before is flagged E, the
     first after D (ONVIF replay semantics). Nothing fills a real gap.

   The first frame is the keyframe at or before ``start`` (a decoder needs it: the
   output may begin up to one GOP before the window); no frame at or after ``end`` is
   used. The last frame gets T. Every seam's first frame is a keyframe and carries D.

Capture times of one picture from two recorders may differ by their clock jitter:
two frames are "the same instant" within half a frame interval.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rmfproxy.archive.coverage import Interval, clip, normalize

DEFAULT_FRAME_INTERVAL = 0.04
"""Frame interval assumed for a source that returned fewer than two frames (25 fps)."""


@dataclass(frozen=True, slots=True)
class ArchiveFrame:
    """One recorded access unit as a replay returned it."""

    capture_time: float
    """Unix time of capture (the 0xABAC NTP timestamp)."""
    keyframe: bool
    """A clean point: a decoder can start here (C bit, or an IDR/IRAP slice)."""
    nals: tuple[bytes, ...]
    """Its NAL units without start codes, in decode order."""
    discontinuity: bool = False
    """D: the recorder says this frame follows a gap (or a seek)."""
    end: bool = False
    """E: the recorder says a gap follows this frame."""

    @property
    def size(self) -> int:
        """Bytes of NAL data."""
        return sum(len(n) for n in self.nals)


@dataclass(frozen=True, slots=True)
class PlannedSpan:
    """One part of the window and the source to fetch it from."""

    source: str | None
    """The source's name; None: the journal says no source covered this span."""
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class StitchedFrame:
    """One frame of the stitched sequence."""

    frame: ArchiveFrame
    source: str
    """The source it was taken from."""
    seam: bool = False
    """The first frame after a switch of source (a keyframe)."""
    discontinuity: bool = False
    """D: the first frame after a seam or a gap."""
    end: bool = False
    """E: a real gap (no source) follows this frame."""
    terminal: bool = False
    """T: the last frame of the sequence."""

    @property
    def capture_time(self) -> float:
        """The frame's capture time."""
        return self.frame.capture_time


@dataclass(frozen=True)
class Stitched:
    """What :func:`stitch` made of the window."""

    frames: list[StitchedFrame]
    seams: int
    """Switches from one source to another without a gap between them."""
    gaps: list[Interval]
    """Parts of the window no frame covers (a leading and a trailing one included)."""
    taken_back: int = 0
    """Frames sent and then replaced by a source taking over at an earlier keyframe."""
    dropped: int = 0
    """Frames of the input skipped because their capture time did not rise."""
    per_source: dict[str, int] = field(default_factory=dict)
    """Frames used from each source."""
    failbacks: frozenset[tuple[str, float]] = frozenset()
    """(source, capture time) of every keyframe a failback was tried at (kept or not)."""


def plan(
    start: float, end: float, intervals: Mapping[str, Sequence[Interval]]
) -> list[PlannedSpan]:
    """Spans of ``[start, end)``: each instant from the first source (mapping order =
    priority) whose intervals cover it, ``source=None`` where none does."""
    if end <= start:
        return []
    per = [(name, clip(ivs, start, end)) for name, ivs in intervals.items()]
    cuts = sorted({start, end, *(t for _, ivs in per for iv in ivs for t in iv)})
    out: list[PlannedSpan] = []
    for a, b in itertools.pairwise(cuts):
        mid = (a + b) / 2
        owner = next((name for name, ivs in per if any(s <= mid < e for s, e in ivs)), None)
        if out and out[-1].source == owner:
            out[-1] = PlannedSpan(owner, out[-1].start, b)
        else:
            out.append(PlannedSpan(owner, a, b))
    return out


def fetch_ranges(
    spans: Sequence[PlannedSpan], start: float, end: float, margin: float
) -> dict[str, list[Interval]]:
    """Per source, the time ranges to ask its recorder for: its planned spans widened by
    ``margin`` on both sides (the journal over-claims; a takeover needs the keyframe
    before the instant), inside ``[start - margin, end)``, joined where they meet.
    Sources are in the order they first appear in ``spans``."""
    out: dict[str, list[Interval]] = {}
    for span in spans:
        if span.source is not None:
            widened = (max(start - margin, span.start - margin), min(end, span.end + margin))
            out.setdefault(span.source, []).append(widened)
    return {name: normalize(ivs) for name, ivs in out.items()}


class _Source:
    """One source's usable frames, their runs and keyframes (stitch internals)."""

    def __init__(self, name: str, frames: Sequence[ArchiveFrame], end: float, gap_factor: float):
        self.name = name
        self.frames: list[ArchiveFrame] = []
        self.dropped = 0
        for f in frames:
            if f.capture_time >= end:
                continue
            if self.frames and f.capture_time <= self.frames[-1].capture_time:
                self.dropped += 1  # repeated or backwards: never send a time twice
                continue
            self.frames.append(f)
        self.times = [f.capture_time for f in self.frames]
        # The frame interval: the lower quartile of the steps between frames the recorder
        # says are contiguous (no D on the later, no E on the earlier). Holes make steps
        # longer, never shorter, so a median would grow with the ones not flagged.
        steps = sorted(
            self.times[i] - self.times[i - 1]
            for i in range(1, len(self.frames))
            if not self.frames[i].discontinuity and not self.frames[i - 1].end
        )
        self.measured = bool(steps)
        self.interval = steps[(len(steps) - 1) // 4] if steps else DEFAULT_FRAME_INTERVAL
        # run_end[i]: index of the last frame of the run frame i belongs to
        self.run_end = [0] * len(self.frames)
        limit = gap_factor * self.interval
        boundaries = [
            i
            for i in range(1, len(self.frames))
            if self.frames[i].discontinuity
            or self.frames[i - 1].end
            or self.times[i] - self.times[i - 1] > limit
        ]
        first = 0
        for b in [*boundaries, len(self.frames)]:
            for i in range(first, b):
                self.run_end[i] = b - 1
            first = b
        self.keys = [i for i, f in enumerate(self.frames) if f.keyframe]
        self.key_times = [self.times[i] for i in self.keys]

    def key_at_or_before(self, t: float) -> int | None:
        """Index of the last keyframe captured at or before ``t``."""
        k = bisect.bisect_right(self.key_times, t)
        return self.keys[k - 1] if k else None

    def key_after(self, t: float) -> int | None:
        """Index of the first keyframe captured after ``t``."""
        k = bisect.bisect_right(self.key_times, t)
        return self.keys[k] if k < len(self.keys) else None

    def key_near(self, t: float, tol: float) -> int | None:
        """Index of a keyframe captured within ``tol`` of ``t``."""
        k = bisect.bisect_left(self.key_times, t - tol)
        if k < len(self.keys) and self.key_times[k] <= t + tol:
            return self.keys[k]
        return None


@dataclass(slots=True)
class _Out:
    source: int
    index: int
    t: float
    after_gap: bool = False
    failback_key: bool = False


@dataclass(frozen=True, slots=True)
class Resume:
    """Where an earlier part of the sequence stopped (it was sent already)."""

    source: str
    """The source of the last frame sent."""
    capture_time: float
    """Its capture time."""
    failbacks: frozenset[tuple[str, float]] = frozenset()
    """Failbacks tried after it by the walk that sent it (:attr:`Stitched.failbacks`):
    not tried again, so the resumed walk goes the way that walk went."""


def stitch(
    start: float,
    end: float,
    frames: Mapping[str, Sequence[ArchiveFrame]],
    *,
    gap_factor: float = 1.75,
    resume: Resume | None = None,
) -> Stitched:
    """One sequence of frames for ``[start, end)`` from ``frames`` (per source, mapping
    order = priority, each in capture order): see the module docstring.

    With ``resume`` the sequence continues one sent before (a stream stitched part by
    part): the walk starts as if the frame ``resume`` names were the last one out, and
    none of the frames returned is at or before it. Nothing sent can be taken back, so
    a takeover that would start at a keyframe at or before that frame starts at the
    next keyframe after it instead, as after a gap (D, and the hole is in ``gaps``).
    ``start`` is then ignored.
    """
    srcs = [_Source(name, fs, end, gap_factor) for name, fs in frames.items()]
    # The camera's frame interval: the densest source's (one that records fewer frames,
    # e.g. keyframes only, must not make the others' pictures look like gaps).
    measured = [src.interval for src in srcs if src.measured]
    interval = min(measured) if measured else DEFAULT_FRAME_INTERVAL
    out: list[_Out] = []
    taken_back = 0
    used_failbacks: set[tuple[int, int]] = set()
    cur: tuple[int, int] | None = None  # (source, index of the last frame sent from it)
    pinned = 0  # entries of ``out`` sent before (never taken back): 1 with ``resume``
    if resume is not None:
        cur = _resumed(srcs, resume, interval)
        s, i = cur if cur is not None else (-1, -1)
        out.append(_Out(s, i, resume.capture_time))
        pinned = 1
        for name, ft in resume.failbacks:
            for fs, src in enumerate(srcs):
                if src.name == name and (k := src.key_near(ft, 0.25 * src.interval)) is not None:
                    used_failbacks.add((fs, k))
    budget = 4 * sum(len(s.frames) for s in srcs) + 16
    while budget > 0:
        budget -= 1
        last_t = out[-1].t if out else None
        if cur is not None:
            s, i = cur
            src = srcs[s]
            if i < src.run_end[i]:
                nxt_t = src.times[i + 1]
                back = _failback(srcs, s, nxt_t, used_failbacks)
                if back is not None:
                    used_failbacks.add(back)
                    out.append(_Out(back[0], back[1], srcs[back[0]].times[back[1]]))
                    out[-1].failback_key = True
                    cur = back
                else:
                    out.append(_Out(s, i + 1, nxt_t))
                    cur = (s, i + 1)
                continue
        # Nothing to continue with: who takes over?
        if last_t is None:
            pick = _first(srcs, start)
            if pick is None:
                break
            out.append(_Out(pick[0], pick[1], srcs[pick[0]].times[pick[1]]))
            cur = pick
            continue
        pick = _takeover(srcs, last_t, interval)
        after_gap = False
        if pick is None:
            pick = _after_gap(srcs, last_t + 0.5 * interval)
            if pick is None:
                break
            after_gap = True
        s, k = pick
        kt = srcs[s].times[k]
        tol = _tol(srcs, s, out[-1].source)
        sent = out[0]
        if pinned and kt - tol <= sent.t and sent.source == s and k <= sent.index:
            # It would take back what was sent only to send the same pictures again
            # (the same source from an earlier keyframe of the same run): go on from the
            # last one sent instead.
            del out[pinned:]
            cur = (s, sent.index)
            continue
        if pinned and kt - tol <= sent.t:
            # It would take back what was sent: a keyframe after that, or a gap.
            pick = _takeover(srcs, last_t, interval, after=out[0].t + tol)
            if pick is None:
                pick = _after_gap(srcs, last_t + 0.5 * interval)
                if pick is None:
                    break
                after_gap = True
            s, k = pick
            kt = srcs[s].times[k]
        while len(out) > pinned and out[-1].t >= kt - tol:
            popped = out.pop()
            after_gap = after_gap or popped.after_gap
            taken_back += 1
        out.append(_Out(s, k, kt, after_gap=after_gap))
        cur = pick
    else:
        raise RuntimeError("stitch did not converge")  # a bug: the budget bounds the work
    result = _result(srcs, out, start, end, taken_back, interval, pinned)
    tried = frozenset((srcs[fs].name, srcs[fs].times[k]) for fs, k in used_failbacks)
    return dataclasses.replace(result, failbacks=tried)


def _resumed(srcs: list[_Source], resume: Resume, interval: float) -> tuple[int, int] | None:
    """(source, index) of the frame ``resume`` names, if that source returned it."""
    for s, src in enumerate(srcs):
        if src.name != resume.source:
            continue
        i = bisect.bisect_left(src.times, resume.capture_time - 0.5 * src.interval)
        if i < len(src.times) and abs(src.times[i] - resume.capture_time) <= 0.5 * src.interval:
            return (s, i)
    return None


def _tol(srcs: list[_Source], a: int, b: int) -> float:
    """Half the shorter frame interval of two sources: "the same instant" (a source
    index of -1, the unknown source of a resumed sequence, counts as the other)."""
    return 0.5 * min(srcs[x].interval for x in (a, b) if x >= 0)


def _first(srcs: list[_Source], start: float) -> tuple[int, int] | None:
    """Where the sequence begins: the highest-priority source with a keyframe at or before
    ``start`` whose run reaches ``start``; else the earliest keyframe after it."""
    for s, src in enumerate(srcs):
        k = src.key_at_or_before(start)
        if k is not None and src.times[src.run_end[k]] >= start:
            return (s, k)
    return _after_gap(srcs, start)


def _takeover(
    srcs: list[_Source], last_t: float, interval: float, after: float = float("-inf")
) -> tuple[int, int] | None:
    """The highest-priority source that can go on after ``last_t`` from a keyframe at or
    before the next frame instant (``interval``: the camera's frame interval), captured
    after ``after``."""
    for s, src in enumerate(srcs):
        k = src.key_at_or_before(last_t + 1.5 * interval)
        if (
            k is not None
            and src.times[k] > after
            and src.times[src.run_end[k]] > last_t + 0.5 * interval
        ):
            return (s, k)
    return None


def _after_gap(srcs: list[_Source], after: float) -> tuple[int, int] | None:
    """The earliest keyframe of any source captured after ``after`` (ties: priority)."""
    best: tuple[int, int] | None = None
    for s, src in enumerate(srcs):
        k = src.key_after(after)
        if k is not None and (best is None or src.times[k] < srcs[best[0]].times[best[1]]):
            best = (s, k)
    return best


def _failback(
    srcs: list[_Source], cur: int, t: float, used: set[tuple[int, int]]
) -> tuple[int, int] | None:
    """A higher-priority source with a keyframe at instant ``t`` (each keyframe at most
    once, so a source that keeps dropping out cannot make the walk go round in circles)."""
    for s in range(cur):
        k = srcs[s].key_near(t, _tol(srcs, s, cur))
        if k is not None and (s, k) not in used:
            return (s, k)
    return None


def _result(
    srcs: list[_Source],
    out: list[_Out],
    start: float,
    end: float,
    taken_back: int,
    interval: float,
    pinned: int = 0,
) -> Stitched:
    """``out[:pinned]`` was sent before: it only tells the next frame's seam and gap."""
    frames: list[StitchedFrame] = []
    seams = 0
    gaps: list[Interval] = []
    per: dict[str, int] = {}
    for n, o in enumerate(out):
        if n < pinned:
            continue
        src = srcs[o.source]
        nxt = out[n + 1] if n + 1 < len(out) else None
        seam = n > 0 and not o.after_gap and out[n - 1].source != o.source
        seams += seam
        if o.after_gap and n > 0:
            gaps.append((out[n - 1].t + interval, o.t))
        frames.append(
            StitchedFrame(
                src.frames[o.index],
                src.name,
                seam=seam,
                discontinuity=seam or (o.after_gap and n > 0),
                end=nxt is not None and nxt.after_gap,
                terminal=nxt is None,
            )
        )
        per[src.name] = per.get(src.name, 0) + 1
    if out:
        if not pinned and out[0].t > start + 0.5 * interval:
            gaps.insert(0, (start, out[0].t))
        if out[-1].t + 1.5 * interval < end:
            gaps.append((out[-1].t + interval, end))
    elif end > start:
        gaps.append((start, end))
    return Stitched(
        frames,
        seams,
        [(a, b) for a, b in gaps if b > a],
        taken_back,
        sum(s.dropped for s in srcs),
        per,
    )
