"""One outbound video stream built from several sources of one camera, without I/O.

The caller passes ``now``; nothing here reads a clock or a socket.

Two recorders relaying one camera without transcoding carry the same coded
pictures, but each re-stamps, re-packetizes and re-orders the rest in its own
way (see :mod:`rmfproxy.relay.access_unit`). The merger works on access
units (AUs), in the spirit of SMPTE ST 2022-7 at picture level:

* **Identity is content.** Every complete AU has a fingerprint of its coded
  slices only. The outbound stream is a sequence of AUs with indices; an AU
  whose fingerprint is already among the AUs sent after the source's last
  known position is a copy and is dropped. Timestamps never decide identity:
  recorders that stamp by arrival disagree by tens of milliseconds.
* **Position, not time.** A source that matched an outbound AU is *located*:
  its next AU is either the copy of a later outbound AU (it is behind), or,
  when the source is at the head, the next AU of the stream, sent at once
  (first copy wins). A source that lost a packet no longer knows where it
  is; it keeps its AUs in a short ring until another source's copy of one of
  them goes out (it is located again, and whatever it holds beyond that goes
  out in order), or until no other located source is there to fill the gap
  (it carries on alone). So a picture is never sent after a hole that
  another source could fill, and a dying source costs no frame.
* **One timeline, smoothed.** Each source's timestamps map onto the outbound
  timeline through an offset re-estimated from every matched copy (jitter
  and clock drift between recorders average out). An outbound timestamp
  advances by whole frame spacings of the camera (the median spacing of the
  sending source) plus a small correction towards the mapped time, so
  recorder jitter is filtered out, drift is followed, and time never goes
  back. A source whose timestamps jump (restart without reconnect, clock
  step, garbage) is re-aligned alone, on wall-clock time.
* **Keyframes are decodable on their own.** The last parameter sets of each
  source are cached (and seeded from the SDP); a keyframe AU sent without
  them gets them inserted in front, with its timestamp.
* **Identical or not is observed.** A located source whose AUs stop matching
  the stream becomes ``DIFFERENT`` (if it is the active source, the stream
  restarts on it at its next keyframe instead); an unlocated source that
  finds its AUs among the sent ones becomes ``ALIGNED``. Every change is an
  event for the caller to log.
* A source that does not carry the same pictures is only brought in by
  :meth:`Merger.anchor`: at its next keyframe the timeline continues on it
  (sequence +1, timestamp advanced by the wall time that passed) and every
  other source must locate itself again. After such a restart at an H.265
  CRA, the RASL pictures that follow it are dropped (ITU-T H.265 §8.1.3:
  they refer to pictures the client never got).

The merger decides the outbound sequence numbers and timestamps of the video
track; its :class:`~rmfproxy.relay.timeline.Timeline` writes them.
"""

from __future__ import annotations

import enum
import random
import struct
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rmfproxy.relay.access_unit import AccessUnit, AuAssembler
from rmfproxy.relay.timeline import Timeline
from rmfproxy.rtp.nal import NalFormat, packetize
from rmfproxy.rtp.seqnum import ts_diff

Out = list[tuple[bytearray, bool]]
"""Outbound packets, each with a flag on the first packet of a keyframe AU."""
_NOTHING: tuple[()] = ()
"""What a packet that ends no AU releases."""
_M32 = 0xFFFFFFFF

HISTORY = 256
"""Outbound AUs remembered for matching copies (about 10 s at 25 fps)."""
RING = 48
"""AUs an unlocated source keeps while it looks for its place (about 2 s at 25 fps)."""
RING_START = 1000
RING_START_BYTES = 4 << 20
"""AUs and bytes a source keeps before anything has gone out: a recorder's fast-start burst
of a whole GOP (a 4 s GOP at 8 Mbit/s) must keep its keyframe for ``start_held``. Dropped
as soon as the stream starts."""
RING_DIFFERENT = 8
"""AUs a source found different keeps: enough to find its place again if it turns into a
copy of the stream up to 8 AUs ahead (behind, its AUs are found in the history). A
standby of another encoding never matches; holding 2 s of its pictures would cost ~1 MB a
camera at 4 Mbit/s for nothing."""
RING_BYTES = 8 << 20
MISMATCH_LIMIT = 5
"""Consecutive AUs of a located source missing from the stream before it is called different."""
DIFFERENT_AFTER = 50
"""AUs of an unlocated source matching nothing, while the stream goes on, before it is called
different."""
ALIVE = 0.3
"""Seconds a located source counts as able to fill a gap after its last AU."""
JUMP_SECONDS = 5.0
"""A source whose mapped time is further than this from the wall clock jumped."""
MATCH_LAG = 1.5
"""Seconds behind the head of the stream a source placing itself anew may be matched at."""
OFFSET_GAIN = 0.1
"""How fast a source's timestamp offset follows its matched copies."""
TIMING_GAIN = 0.1
"""How much of the distance to a source's mapped time one outbound step corrects
(at most an eighth of a frame spacing per AU)."""
GAP_FRAMES = 2.5
"""A mapped step beyond this many frame spacings is a real gap, kept in the timeline."""
SPACING_CHUNK = 8
SPACING_CHUNKS = 16
"""A source's frame spacing: the median over SPACING_CHUNKS runs of SPACING_CHUNK AUs
(about 5 s at 25 fps)."""


class MergeState(enum.Enum):
    """Whether a source carries the pictures of the outbound stream."""

    UNKNOWN = "unknown"
    """Not matched yet (just connected, or the stream restarted on another source)."""
    ALIGNED = "aligned"
    """Carries the same AUs as the outbound stream: switching to it is instant."""
    DIFFERENT = "different"
    """Carries other pictures (another encoding): switching to it waits for its keyframe."""


_ALIGNED = MergeState.ALIGNED
"""Bound once for the per-AU path (reading a member off an enum class costs ~0.2 µs)."""


@dataclass(frozen=True, slots=True)
class MergeEvent:
    """A source's merge state changed."""

    index: int
    """The source."""
    state: MergeState
    """Its new state."""
    why: str
    """What showed it (for the log line)."""


@dataclass
class _Source:
    asm: AuAssembler
    state: MergeState = MergeState.UNKNOWN
    located: bool = False
    """``pos`` is known: the source's last AU is outbound AU ``pos``."""
    pos: int = -1
    offset: int | None = None
    """Source timestamp + offset = outbound timestamp."""
    ring: deque[AccessUnit] = field(default_factory=deque)
    ring_bytes: int = 0
    mismatches: int = 0
    unmatched: int = 0
    seen_head: int = -1
    anchor_pending: bool = False
    params: dict[int, bytes] = field(default_factory=dict)
    sdp_params: dict[int, bytes] = field(default_factory=dict)
    stamps: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=SPACING_CHUNK + 1))
    """(AU count, timestamp) of its last complete AUs: a run of SPACING_CHUNK spacings
    ends at the newest."""
    stamped: int = 0
    """Stamps appended since ``stamps`` was last cleared."""
    runs: list[array[float]] = field(
        default_factory=lambda: [array("d") for _ in range(SPACING_CHUNK)]
    )
    """Mean spacings of the runs of SPACING_CHUNK stamps ending at each stamp, by the stamp's
    phase (``stamped`` modulo SPACING_CHUNK): the runs the spacing is the median of are the
    last stamp's phase's (the last SPACING_CHUNKS; arrays of doubles, not deques of floats:
    a tenth of the memory)."""
    spacing: float = 0.0
    """Its frame spacing in ticks (0 while unknown), see :meth:`Merger._learn_spacing`."""
    au_count: int = 0
    last_au_at: float = -1e9
    aus_sent: int = 0
    aus_dropped: int = 0
    """Copies of AUs another source delivered first."""
    aus_broken: int = 0
    """AUs with a missing packet (never sent)."""
    aus_late: int = 0
    """Whole AUs that arrived after the stream had gone past them."""
    jumps: int = 0
    """Timestamp jumps re-aligned on the wall clock."""
    held: AccessUnit | None = None
    """Its AU at the head of the stream, held back while a restart on another source waits
    for that source's keyframe (see :meth:`Merger._place`)."""
    held_at: float = 0.0
    aus_replaced: int = 0
    """Held AUs not sent: the restarting source's keyframe showed that instant instead."""


class Merger:
    """Builds one outbound video stream from the AUs of several sources."""

    def __init__(
        self,
        fmt: NalFormat,
        clock_rate: int,
        rng: random.Random | None = None,
        *,
        merge: bool = True,
        mtu: int = 1400,
    ) -> None:
        rng = rng or random.SystemRandom()
        self.fmt = fmt
        self.clock_rate = clock_rate
        self.merge = merge
        """False: never match sources (each switch is a keyframe restart)."""
        self.mtu = mtu
        self.timeline = Timeline(clock_rate, rng)
        """The outbound SSRC, numbering and counters."""
        self.active: int | None = None
        """The source the caller's policy prefers; its pictures win a disagreement."""
        self.events: list[MergeEvent] = []
        """State changes since the caller last emptied the list."""
        self._skip_leading = False
        self._sources: dict[int, _Source] = {}
        self._fp_index: dict[int, int] = {}
        """Ring slot of the last AU sent with each fingerprint of the history (slots are
        below HISTORY: small ints Python shares, where indices would be an int object per
        AU; see :meth:`_sent_index`)."""
        self._hist_fp = [0] * HISTORY
        self._hist_ts = array("q", bytes(8 * HISTORY))
        """Fingerprint and outbound timestamp of outbound AU ``i`` at ``i % HISTORY``, for
        the last HISTORY AUs: a ring of machine integers, not a pair of objects per AU
        (this history is most of a camera's fixed memory)."""
        self.head = -1
        """Index of the last outbound AU."""
        self._floor = -1
        """Outbound AUs up to this index belong to the timeline before the last restart."""
        self.last_sender: int | None = None
        self.params_inserted = 0
        """Keyframes sent with parameter sets the winning copy lacked."""
        self.leading_dropped = 0
        self.on_au: Callable[[int, AccessUnit, float], None] | None = None
        """Called with every complete AU of every source, before it is merged (the feed keeps
        each source's current GOP with it). The packets are rewritten in place if sent."""

    # sources -------------------------------------------------------------------

    def _source(self, index: int) -> _Source:
        src = self._sources.get(index)
        if src is None:
            src = _Source(AuAssembler(self.fmt))
            self._sources[index] = src
        return src

    def reset_source(self, index: int, sdp_params: dict[int, bytes] | None = None) -> None:
        """A source (re)connected: new SSRC and bases, it must locate itself again.
        ``sdp_params``: parameter sets from its SDP (``sprop-*``), by NAL type."""
        old = self._sources.get(index)
        src = _Source(AuAssembler(self.fmt))
        src.sdp_params = dict(sdp_params or {})
        if old is not None and old.state is not MergeState.UNKNOWN:
            self.events.append(MergeEvent(index, MergeState.UNKNOWN, "reconnected"))
        self._sources[index] = src

    def source_gone(self, index: int) -> None:
        """A source's session ended: it fills no gap any more, so a source holding AUs after
        a loss of its own carries the stream on at once instead of waiting ``ALIVE``."""
        src = self._sources.get(index)
        if src is not None:
            src.located = False
            src.last_au_at = -1e9

    def aligned(self, index: int) -> bool:
        """True while the source carries the outbound stream's AUs (switching is instant)."""
        src = self._sources.get(index)
        return src is not None and src.state is MergeState.ALIGNED

    def state(self, index: int) -> MergeState:
        """The source's merge state."""
        src = self._sources.get(index)
        return src.state if src is not None else MergeState.UNKNOWN

    def anchor(self, index: int) -> None:
        """Bring in a source that does not align: at its next keyframe AU, restart on it."""
        self._source(index).anchor_pending = True

    def start_held(self, index: int, now: float) -> Out:
        """Nothing has gone out yet: start the stream on the newest keyframe AU the source
        holds (it came before the source was chosen, as a recorder starts a stream on a
        keyframe) and go on with the AUs it holds after it, instead of waiting a GOP for the
        next keyframe. Returns what it releases; nothing when it holds no keyframe (then the
        caller anchors it)."""
        src = self._sources.get(index)
        if src is None or self.head >= 0:
            return []
        ring = list(src.ring)
        first = next((k for k in range(len(ring) - 1, -1, -1) if ring[k].keyframe), None)
        if first is None:
            return []
        out: Out = []
        self._restart(index, src, ring[first], now, out)
        for au in ring[first + 1 :]:
            self._place(index, src, au, now, out)
        return out

    def cancel_anchor(self, index: int) -> None:
        """The restart on this source is not wanted any more (the caller's switch was called
        off): releases what other sources hold for it at the next AU."""
        src = self._sources.get(index)
        if src is not None:
            src.anchor_pending = False

    def anchoring(self, index: int) -> bool:
        """True while a restart on this source waits for its keyframe."""
        src = self._sources.get(index)
        return src is not None and src.anchor_pending

    def parameter_sets(self, index: int) -> dict[int, bytes]:
        """The last parameter sets the source sent (or its SDP announced), by NAL type."""
        src = self._sources.get(index)
        return {} if src is None else {**src.sdp_params, **src.params}

    def stats(self, index: int) -> dict[str, int]:
        """AU counters of one source."""
        src = self._sources.get(index)
        if src is None:
            return {"sent": 0, "copies": 0, "broken": 0, "late": 0, "jumps": 0, "replaced": 0}
        return {
            "sent": src.aus_sent,
            "copies": src.aus_dropped,
            "broken": src.aus_broken,
            "late": src.aus_late,
            "jumps": src.jumps,
            "replaced": src.aus_replaced,
        }

    # packets -------------------------------------------------------------------

    def push(
        self, index: int, packet: bytearray, payload_start: int, payload_end: int, now: float
    ) -> Out | tuple[()]:
        """Feed one video RTP packet of a source. Returns the outbound packets it releases
        (rewritten in place) with a flag on the first packet of each keyframe."""
        src = self._sources.get(index) or self._source(index)
        aus = src.asm.push(packet, payload_start, payload_end)
        if not aus:
            return _NOTHING  # most packets: no AU ends, no list made
        out: Out = []
        for au in aus:
            self._on_au(index, src, au, now, out)
        return out

    def _on_au(self, index: int, src: _Source, au: AccessUnit, now: float, out: Out) -> None:
        if src.held is not None:
            self._release(index, src, now, out)  # its next AU came: the held one is not a twin
        src.params.update(au.param_sets)
        self._learn_spacing(src, au)
        if not au.complete:
            src.aus_broken += 1
            src.located = False  # where it is in the stream is unknown until it matches again
            self._drop_ring(src)
            return
        src.last_au_at = now
        if self.on_au is not None:
            self.on_au(index, au, now)
        if src.anchor_pending and au.keyframe:
            found = self._find(src, au)
            if found is not None:
                # It carries the stream's pictures after all (it was only behind): a copy,
                # not a restart. Sending this keyframe again would show a picture twice.
                src.anchor_pending = False
                self._locate(index, src, found, au)
                return
            self._settle_held(index, now, out)
            self._restart(index, src, au, now, out)
            return
        if src.anchor_pending:
            # Not its keyframe yet: the instant it shows goes out from the stream's source.
            self._release_others(index, now, out)
        if src.located:
            self._place(index, src, au, now, out)
            return
        found = self._find(src, au)
        if found is not None:
            self._locate(index, src, found, au)
            return
        if self._may_lead(index, src, now):
            # It was the stream (or an identical copy of it) until it lost a packet, and no
            # other source is there to fill the gap: go on alone, oldest held AU first.
            held = list(src.ring)
            self._drop_ring(src)
            src.located = True
            for h in [*held, au]:
                self._place(index, src, h, now, out)
            return
        self._hold(src, au)

    def _learn_spacing(self, src: _Source, au: AccessUnit) -> None:
        """Update the source's frame spacing: the median of the mean spacings of runs of
        SPACING_CHUNK AUs over the last few seconds (runs ending at the last AU, the one
        SPACING_CHUNK before, ...). A run's mean cancels a recorder's per-AU jitter; the
        median ignores the few runs a stall distorted (a recorder that was stopped stamps its
        backlog on arrival: a gap, then a burst); a camera that lowers its frame rate shows
        once half the runs have it. Each run's mean is computed once, when it ends."""
        src.au_count += 1
        if not au.complete:
            return
        stamps = src.stamps
        if stamps:
            n, ts = stamps[-1]
            d = ts_diff(au.ts, ts)
            if not -self.clock_rate < d < 2 * self.clock_rate * (src.au_count - n):
                stamps.clear()  # its timestamps jumped: start over
                src.stamped = 0
                for run in src.runs:
                    del run[:]
        stamps.append((src.au_count, au.ts))
        src.stamped += 1
        if len(stamps) <= SPACING_CHUNK:
            if len(stamps) >= 2:
                (n0, t0), (n1, t1) = stamps[0], stamps[-1]
                src.spacing = ts_diff(t1, t0) / (n1 - n0)
            else:
                src.spacing = 0.0
            return
        (n0, t0), (n1, t1) = stamps[-1 - SPACING_CHUNK], stamps[-1]
        runs = src.runs[src.stamped % SPACING_CHUNK]
        if len(runs) == SPACING_CHUNKS:
            del runs[0]
        runs.append(ts_diff(t1, t0) / (n1 - n0))
        ordered = sorted(runs)  # the median, without statistics.median's checks (per AU)
        mid = len(ordered) // 2
        src.spacing = ordered[mid] if len(ordered) & 1 else (ordered[mid - 1] + ordered[mid]) / 2

    def _find(self, src: _Source, au: AccessUnit) -> int | None:
        """The outbound index of a copy of ``au`` sent after the source's last position."""
        if not self.merge:
            return None
        i = self._sent_index(au.fingerprint)
        aligned = src.state is _ALIGNED
        low = max(src.pos, self._floor) if aligned else self._floor
        if i is None or not low < i <= self.head:
            return None
        if not aligned:
            # A source placing itself anew: a picture sent long ago is not where it is but
            # the same picture coded again (a static scene repeats its slices a GOP later, a
            # looping clip a loop later). Placed there, it would follow the stream seconds
            # behind and every picture of it would be a copy: nothing would go out.
            lag = ts_diff(self.timeline.ts, self._out_ts_of(i)) / self.clock_rate
            if lag > MATCH_LAG:
                return None
        return i

    def _may_lead(self, index: int, src: _Source, now: float) -> bool:
        """Can an unlocated source that was aligned carry the stream on alone? Only when no
        other located source is delivering: one that is would fill the gap."""
        if src.state is not MergeState.ALIGNED:
            return False
        return not any(
            o.located and now - o.last_au_at < ALIVE for i, o in self._sources.items() if i != index
        )

    def _hold(self, src: _Source, au: AccessUnit) -> None:
        if not self.merge:
            return
        if self.head != src.seen_head:
            src.seen_head = self.head
            src.unmatched += 1
        src.ring.append(au)
        src.ring_bytes += au.payload_bytes
        keep, keep_bytes = RING, RING_BYTES
        if src.state is MergeState.DIFFERENT:
            keep = RING_DIFFERENT
        elif self.head < 0:
            keep, keep_bytes = RING_START, RING_START_BYTES
        while len(src.ring) > keep or src.ring_bytes > keep_bytes:
            old = src.ring.popleft()
            src.ring_bytes -= old.payload_bytes
        if src.unmatched >= DIFFERENT_AFTER and src.state is not MergeState.DIFFERENT:
            src.state = MergeState.DIFFERENT
            self.events.append(MergeEvent(self._index_of(src), src.state, "no-match"))

    def _drop_ring(self, src: _Source) -> None:
        src.ring.clear()
        src.ring_bytes = 0

    def _index_of(self, src: _Source) -> int:
        return next(i for i, s in self._sources.items() if s is src)

    def _place(
        self, index: int, src: _Source, au: AccessUnit, now: float, out: Out, hold: bool = True
    ) -> None:
        """A located source's next AU: a copy, the next AU of the stream, or a stranger.

        While a restart on another source waits for that source's keyframe, the AU at the
        head is held until its twin instant from the restarting source is known: that
        source's next AU (not a keyframe: send the held one), this source's next AU, or the
        keyframe itself, which replaces the held AU when it came less than half a frame
        spacing later (the same instant in another encoding: sending both would show it
        twice). This costs at most one frame of latency, and only during such a switch."""
        found = self._find(src, au)
        if found is not None:
            self._matched(src, found, au)
            src.aus_dropped += 1
            return
        if src.pos >= self.head:
            if hold and self._restart_waiting(index, src, now):
                if src.held is not None:
                    self._release(index, src, now, out)
                src.held, src.held_at = au, now
                return
            self._emit(index, src, au, now, out)
            return
        # Behind the stream, and the stream does not have this picture.
        src.aus_late += 1
        src.mismatches += 1
        if src.mismatches >= MISMATCH_LIMIT:
            self._diverged(index, src)

    def _restart_waiting(self, index: int, src: _Source, now: float) -> bool:
        """Is a restart on another, delivering source waiting for its keyframe?"""
        for i, o in self._sources.items():  # a loop, not any(): once per AU at the head
            if o.anchor_pending and i != index and now - o.last_au_at < ALIVE:
                return src.spacing > 0
        return False

    def _release(self, index: int, src: _Source, now: float, out: Out) -> None:
        """Send a source's held AU (unless a copy went out meanwhile), as of when it came: a
        restart right after it continues the timeline by the wall time since then."""
        au, src.held = src.held, None
        if au is not None and src.located:
            self._place(index, src, au, min(now, src.held_at), out, hold=False)

    def _release_others(self, index: int, now: float, out: Out) -> None:
        for i, other in list(self._sources.items()):
            if i != index and other.held is not None:
                self._release(i, other, now, out)

    def _settle_held(self, index: int, now: float, out: Out) -> None:
        """Source ``index`` restarts the stream at its keyframe, which arrived ``now``: a held
        AU of another source that came less than half a frame spacing before shows the same
        instant and is not sent; an older one goes out first."""
        for i, other in list(self._sources.items()):
            au = other.held
            if i == index or au is None:
                continue
            if now - other.held_at < other.spacing / self.clock_rate / 2:
                other.held = None
                other.aus_replaced += 1
            else:
                self._release(i, other, now, out)

    def _matched(self, src: _Source, i: int, au: AccessUnit) -> None:
        src.pos = i
        src.mismatches = 0
        src.unmatched = 0
        sample = (self._out_ts_of(i) - au.ts) & _M32
        if src.offset is None:
            src.offset = sample
            return
        delta = ts_diff(sample, src.offset)
        if abs(delta) > JUMP_SECONDS * self.clock_rate:
            src.offset = sample  # its timestamps jumped: re-align it alone
            src.jumps += 1
        else:
            src.offset = (src.offset + round(delta * OFFSET_GAIN)) & _M32

    def _locate(self, index: int, src: _Source, i: int, au: AccessUnit) -> None:
        """The source's AU ``au`` is outbound AU ``i``: it knows where it is again (and a
        restart waiting for its keyframe is not needed any more)."""
        src.located = True
        src.anchor_pending = False
        if src.state is not MergeState.ALIGNED:
            src.state = MergeState.ALIGNED
            src.offset = None
            self.events.append(MergeEvent(index, src.state, "matched"))
        self._drop_ring(src)
        self._matched(src, i, au)
        src.aus_dropped += 1

    def _diverged(self, index: int, src: _Source) -> None:
        src.mismatches = 0
        src.located = False
        self._drop_ring(src)
        if index == self.active:
            # The stream carries pictures the active source does not: the others diverged
            # from it. Restart on the active source at its next keyframe.
            src.anchor_pending = True
            src.state = MergeState.UNKNOWN
            self.events.append(MergeEvent(index, MergeState.UNKNOWN, "active-diverged"))
        else:
            src.state = MergeState.DIFFERENT
            self.events.append(MergeEvent(index, src.state, "mismatch"))

    def _restart(self, index: int, src: _Source, au: AccessUnit, now: float, out: Out) -> None:
        """Continue the stream on ``src`` from this keyframe; everyone else locates again."""
        src.anchor_pending = False
        self._floor = self.head
        for i, other in self._sources.items():
            if i == index:
                continue
            other.located = False
            other.pos = -1
            other.unmatched = 0
            other.mismatches = 0
            other.held = None
            self._drop_ring(other)
            if other.state is MergeState.ALIGNED:
                other.state = MergeState.UNKNOWN
                self.events.append(MergeEvent(i, other.state, "restart"))
        if src.state is not MergeState.ALIGNED:
            self.events.append(MergeEvent(index, MergeState.ALIGNED, "restart"))
        src.state = MergeState.ALIGNED
        src.located = True
        src.offset = None
        self._drop_ring(src)
        self._emit(index, src, au, now, out, restart=True)

    # output --------------------------------------------------------------------

    def _emit(
        self,
        index: int,
        src: _Source,
        au: AccessUnit,
        now: float,
        out: Out,
        restart: bool = False,
    ) -> None:
        if restart:
            self._skip_leading = bool(self.fmt.leading_skip_types)
        elif self._skip_leading and au.skip_on_start:
            # A RASL picture after a restart at a CRA: it refers to pictures the client
            # never got. It takes its place in the stream (copies match it) but is not sent.
            self.leading_dropped += 1
            self._record(au.fingerprint, self.timeline.ts)
            src.pos = self.head
            return
        elif not au.keyframe:
            self._skip_leading = False
        out_ts = self._out_ts(src, au, now, restart)
        packets = au.packets
        if au.keyframe:
            packets = self._with_params(src, au) + packets
        self.timeline.write_unit(packets, out_ts, now)
        out.append((packets[0], au.keyframe))
        out.extend([(pkt, False) for pkt in packets[1:]])
        self._record(au.fingerprint, out_ts)
        src.pos = self.head
        src.aus_sent += 1
        self.last_sender = index
        if self.merge:
            self._offer(index, au, now, out)

    def _record(self, fp: int, out_ts: int) -> None:
        self.head = head = self.head + 1
        slot = head % HISTORY
        old_fp = self._hist_fp[slot]  # of AU head - HISTORY, forgotten now
        if self._fp_index.get(old_fp) == slot:  # (a later copy of it has another slot)
            del self._fp_index[old_fp]
        self._hist_fp[slot] = fp
        self._hist_ts[slot] = out_ts
        self._fp_index[fp] = slot

    def _sent_index(self, fp: int) -> int | None:
        """The outbound index of the last of the last HISTORY AUs with fingerprint ``fp``."""
        slot = self._fp_index.get(fp)
        if slot is None:
            return None
        return self.head - (self.head - slot) % HISTORY

    def _out_ts_of(self, i: int) -> int:
        """The outbound timestamp of AU ``i``, one of the last HISTORY."""
        return self._hist_ts[i % HISTORY]

    def _offer(self, index: int, au: AccessUnit, now: float, out: Out) -> None:
        """An AU went out: unlocated sources holding a copy of it know where they are now,
        and whatever they hold beyond it is the continuation of the stream."""
        sent = self.head
        for i, other in list(self._sources.items()):
            if i == index or other.located or not other.ring:
                continue
            ring = list(other.ring)
            at = next((r for r, h in enumerate(ring) if h.fingerprint == au.fingerprint), None)
            if at is None:
                continue
            self._locate(i, other, sent, ring[at])
            for h in ring[at + 1 :]:
                if other.located:
                    self._place(i, other, h, now, out)

    def _out_ts(self, src: _Source, au: AccessUnit, now: float, restart: bool) -> int:
        """The outbound timestamp of the next AU, sent from ``src``."""
        tl = self.timeline
        wall = tl.continue_at(now)
        if tl.wall is None or restart or src.offset is None:
            src.offset = (wall - au.ts) & _M32
            return wall
        d = ts_diff((au.ts + src.offset) & _M32, tl.ts)
        w = ts_diff(wall, tl.ts)
        if abs(d - w) > JUMP_SECONDS * self.clock_rate:
            # This source's timestamps jumped (a restart without reconnect, a clock step,
            # garbage): re-align it alone on the wall clock; the stream goes on.
            src.offset = (wall - au.ts) & _M32
            src.jumps += 1
            return wall
        spacing = src.spacing
        if spacing > 0:
            # One frame spacing per AU (this AU follows the last one sent: content says so),
            # more only when the gap is far beyond any jitter (frames the camera skipped, an
            # outage); a small pull towards the mapped time follows drift between clocks.
            k = round(d / spacing) if d > GAP_FRAMES * spacing else 1
            err = d - k * spacing
            lim = spacing / 8
            step = k * spacing + min(lim, max(-lim, err * TIMING_GAIN))
        else:
            step = float(w)  # nothing known of this source's pace yet: the wall clock's
        return (tl.ts + max(1, round(step))) & _M32

    def _with_params(self, src: _Source, au: AccessUnit) -> list[bytearray]:
        """Packets of the parameter sets a keyframe AU lacks, from the sending source's cache,
        another source's, or the SDP."""
        missing = [t for t in self.fmt.param_types if t not in au.param_sets]
        if not missing:
            return []
        caches = [src.params, *(s.params for s in self._sources.values()), src.sdp_params]
        caches += [s.sdp_params for s in self._sources.values()]
        nals = []
        for t in missing:
            nal = next((c[t] for c in caches if t in c), None)
            if nal is None:
                return []  # nothing known to insert: send it as it came
            nals.append(nal)
        pt = au.packets[0][1] & 0x7F
        self.params_inserted += 1
        return [
            bytearray(struct.pack(">BBHII", 0x80, pt, 0, 0, 0)) + p
            for p in packetize(self.fmt, nals, self.mtu)
        ]
