"""Stitched playback: a camera's history over RTSP, from whichever recorder has it.

A client asks the proxy for history as it would ask an ONVIF recorder
(:mod:`rmfproxy.serve.replay`: ``Require: onvif-replay``, or the ``replay/<camera>``
URL, ``Range: clock=`` or ``npt=``, ``Rate-Control``, ``Scale``, ``Frames: intra``).
The proxy opens replay sessions on the recorders itself and sends one stream.

Theory of operation.

- **Parts.** A long span cannot be held in memory, so it is read and stitched in parts
  of :data:`PART_SECONDS` (:func:`stitched_frames`). Part *k* covers ``[a, b)``; its
  frames are read from ``a - HOLD`` (the recorders start each read at the clean point
  before that) and stitched by :func:`~rmfproxy.archive.stitch.stitch` *resuming*
  after the last frame the part before sent. Only frames before ``b - HOLD`` go out;
  the next part begins there. A takeover at a seam can reach back one GOP (the
  standby's keyframe before the primary's last frame), so the frames of the last
  :data:`HOLD` seconds are decided by the next part, which sees what follows them:
  the result is the same sequence the whole window stitched at once would give,
  as long as GOPs are shorter than ``HOLD`` (a longer one can only cost a flagged hole
  at a part's edge, never a repeated or undecodable picture). The last frame sent is
  kept back until the next one is known, so its E flag (a gap follows) is right.
  The next part is read while the current one plays; the first part is short
  (``HOLD + FIRST_OUT``), so the first frame goes out after a short read.
- **Which recorder.** Each part is read as the export reads its window
  (:func:`~rmfproxy.archive.fetch.read_window`): the coverage journal says who
  covered what, the primary is preferred, the standby fills the primary's holes,
  and whatever no frame covers is asked of every recorder before it is called a gap.
- **The stream.** One SSRC and one sequence-number run per session; RTP timestamps
  are the capture times on the 90 kHz clock (they jump over a gap, as capture times
  do). Every packet carries the 0xABAC extension with the frame's true capture time,
  C on keyframes, D on the first packet of every seam and of the first frame after a
  gap or a seek, E on the last packet before a gap, T on the last packet of the range.
  A piece that starts on another recorder gets that recorder's parameter sets in
  front of its keyframe when the keyframe lacks them; after an H.265 CRA that starts
  a piece, its RASL pictures are dropped (they refer to pictures before it).
- **Bounded.** At most ``archive.max_playbacks`` sessions replay at once (more get
  503 at SETUP); each holds at most two parts in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from rmfproxy.archive.fetch import (
    ClientFactory,
    JournalReader,
    RecorderSource,
    nal_format,
    read_window,
    replay_client,
)
from rmfproxy.archive.fetch import parameter_sets as source_parameter_sets
from rmfproxy.archive.replay_client import Codec
from rmfproxy.archive.stitch import ArchiveFrame, Resume, StitchedFrame, stitch
from rmfproxy.rtp import onvif
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.nal import NalFormat, packetize
from rmfproxy.rtp.seqnum import ts_diff
from rmfproxy.rtsp.sdp import MediaDescription, SessionDescription
from rmfproxy.serve.replay import (
    ReplayBusy,
    ReplayFrame,
    ReplayRangeError,
    ReplayRequest,
    ReplayStart,
    format_clock,
)

log = structlog.get_logger(__name__)

PART_SECONDS = 30.0
"""Seconds of history read and stitched at a time."""
HOLD = 8.0
"""Seconds at the end of a part left to the next (more than a GOP)."""
FIRST_OUT = 2.0
"""Seconds of history the first part sends: a short first read, a quick first frame."""
MTU = 1400
CLOCK_RATE = 90000
_M32 = 0xFFFFFFFF

Fetch = Callable[[float, float], Awaitable[Mapping[str, Sequence[ArchiveFrame]]]]
"""Reads ``[start, end)``: per source (priority order), its frames."""


async def stitched_frames(
    start: float,
    end: float,
    fetch: Fetch,
    *,
    part: float = PART_SECONDS,
    hold: float = HOLD,
) -> AsyncGenerator[StitchedFrame, None]:
    """The stitched frames of ``[start, end)``, read part by part (module docstring)."""
    if part <= 2 * hold:
        raise ValueError("a part must be longer than twice the hold")
    resume: Resume | None = None
    pending: StitchedFrame | None = None
    b = min(end, start + min(part, hold + FIRST_OUT))
    task: asyncio.Task[Mapping[str, Sequence[ArchiveFrame]]] | None = asyncio.ensure_future(
        fetch(start, b)
    )
    try:
        while task is not None:
            frames = await task
            task = None
            final = end - b < 1e-6  # (sums of floats: a part ending a hair early is the end)
            cut = end if final else b - hold
            if not final:
                nb = min(end, cut + part)
                task = asyncio.ensure_future(fetch(cut - hold, nb))  # read ahead
            got = stitch(start, b, frames, resume=resume)
            for f in got.frames:
                if f.capture_time >= cut and not final:
                    break
                if pending is not None:
                    yield dataclasses.replace(
                        pending, end=f.discontinuity and not f.seam, terminal=False
                    )
                pending = dataclasses.replace(f, terminal=False)
            if pending is not None:
                # and the failbacks this walk tried before the cut (its path up to there
                # is the whole window's): the next part must not try them again
                tried = frozenset(x for x in got.failbacks if x[1] < cut)
                resume = Resume(pending.source, pending.capture_time, tried)
            if not final:
                b = nb
        if pending is not None:
            yield dataclasses.replace(pending, end=False, terminal=True)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


@dataclass
class PlaybackStats:
    """What the proxy's playbacks did (the metrics read it)."""

    sessions: int = 0
    """Replay sessions open now."""
    started: int = 0
    """PLAYs of a range answered."""
    refused: int = 0
    """Sessions refused: too many replaying at once."""
    seams: dict[str, int] = dataclasses.field(default_factory=dict)
    """Per camera, switches from one recorder to another in played streams."""
    gaps: dict[str, int] = dataclasses.field(default_factory=dict)
    """Per camera, holes no recorder had footage for, met in played streams."""
    frames: dict[str, int] = dataclasses.field(default_factory=dict)
    """Per camera, frames sent."""


class StitchedSource:
    """One playback session of one camera; implements ``ReplaySource``."""

    def __init__(
        self,
        camera: str,
        sdp: SessionDescription,
        payload_type: int,
        codec: Codec,
        *,
        journal: JournalReader,
        sources: Sequence[RecorderSource],
        history_start: Callable[[], float],
        stats: PlaybackStats,
        client: ClientFactory = replay_client,
        max_sessions: int = 0,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        part: float = PART_SECONDS,
        hold: float = HOLD,
    ) -> None:
        self.camera = camera
        self._sdp = sdp
        self._pt = payload_type
        self.codec = codec
        self._fmt: NalFormat = nal_format(codec)
        self._journal = journal
        self._sources = list(sources)
        self._history_start = history_start
        self._stats = stats
        self._client = client
        self._max_sessions = max_sessions
        """Playbacks at most at once (0: no limit); a session counts from its first PLAY."""
        self._counted = False
        self._wall = wall
        self._part, self._hold = part, hold
        rng = rng or random.Random()
        self._ssrc = rng.getrandbits(32)
        self._seq = rng.getrandbits(16)
        self._ts_base = rng.getrandbits(32)
        self._anchor: tuple[float, int] = (0.0, self._ts_base)
        """(capture time, RTP timestamp) the stream's timestamps are counted from."""
        self._last_ts: int | None = None
        self._frames: AsyncGenerator[StitchedFrame, None] | None = None
        self._pull: asyncio.Future[StitchedFrame | None] | None = None
        """The task reading the next frame (it survives a cancelled ``next_frame``)."""
        self._window: tuple[float, float] | None = None
        self._intra = False
        self._cseq = 0
        self._seeked = False
        """The next frame follows a seek: it carries D."""
        self._played = False
        self._skipping = False
        """Dropping the RASL pictures after a piece's CRA."""
        self._params: dict[str, list[bytes]] = {}
        """Per source, its latest parameter sets (SDP, then in-band)."""
        self._previous: StitchedFrame | None = None
        self._closed = False

    # ReplaySource -----------------------------------------------------------------

    def sdp(self) -> SessionDescription:
        """The playback SDP (the live video track, the retained history as range)."""
        return self._sdp

    def ssrc(self, track: int) -> int:
        """The session's SSRC (one video track)."""
        return self._ssrc

    def seek(self, request: ReplayRequest) -> ReplayStart:
        """Position for ``request``: a new window (Range), or resume (none)."""
        if self._closed:
            raise ReplayRangeError("the session is closed")
        now = self._wall()
        origin = self._history_start()
        if request.unit == "" and self._frames is not None:
            assert self._window is not None
            return self._reply(self._window[0], self._window[1])
        if not self._counted:
            if self._max_sessions and self._stats.sessions >= self._max_sessions:
                self._stats.refused += 1
                raise ReplayBusy(
                    f"{self._stats.sessions} playbacks already (archive.max_playbacks)"
                )
            self._counted = True
            self._stats.sessions += 1
        start, end = request.start, request.end
        if request.unit == "npt":
            start = None if start is None else origin + start
            end = None if end is None else origin + end
        start = origin if start is None else start
        end = now if end is None else min(end, now)
        if end <= start:
            raise ReplayRangeError("the range holds nothing recorded (it ends before it starts)")
        if end <= origin:
            raise ReplayRangeError("the range ends before the retained history begins")
        self._close_frames()
        self._window = (start, end)
        # Timestamps count from HOLD before the start (the first frame is the keyframe
        # at or before it) and, after a seek, from just after the last one sent: they
        # never go backwards, even for a seek back in time (D tells the client).
        first_ts = self._ts_base if self._last_ts is None else (self._last_ts + 1) & _M32
        self._anchor = (start - self._hold, first_ts)
        self._frames = stitched_frames(start, end, self._fetch, part=self._part, hold=self._hold)
        self._intra = request.intra_only
        self._cseq = request.cseq
        self._seeked = self._played
        self._played = True
        self._stats.started += 1
        log.info(
            "archive.playback_started",
            camera=self.camera,
            start=_iso(start),
            end=_iso(end),
            rate_control=request.rate_control,
            scale=request.scale,
            intra=request.intra_only,
        )
        return self._reply(start, end)

    async def next_frame(self) -> ReplayFrame | None:
        """The next frame of the window, packetized, or None once it is done.

        The frame is pulled by a task of its own, shielded: a PAUSE that cancels the
        sender while the recorders are being read does not end the window (the resume
        gets the frame that read was for)."""
        while self._frames is not None:
            if self._pull is None:
                self._pull = asyncio.ensure_future(_pull(self._frames))
            f = await asyncio.shield(self._pull)
            self._pull = None
            if f is None:
                self._frames = None
                return None
            packets = self._packets(f)
            if packets is not None:
                return ReplayFrame(f.capture_time, f.frame.keyframe, packets)
        return None

    def close(self) -> None:
        """The session ended: stop reading the recorders."""
        if self._closed:
            return
        self._closed = True
        self._close_frames()
        if self._counted:
            self._counted = False
            self._stats.sessions -= 1

    # helpers ----------------------------------------------------------------------

    def _close_frames(self) -> None:
        frames, self._frames = self._frames, None
        pull, self._pull = self._pull, None
        if frames is not None:
            task = asyncio.ensure_future(_dispose(frames, pull))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _reply(self, start: float, end: float) -> ReplayStart:
        return ReplayStart(start=start, end=end, sequence=self._seq, rtptime=self._timestamp(start))

    async def _fetch(self, start: float, end: float) -> dict[str, list[ArchiveFrame]]:
        window = await read_window(
            self.camera,
            start,
            end,
            journal=self._journal,
            sources=self._sources,
            client=self._client,
        )
        out: dict[str, list[ArchiveFrame]] = {}
        for name, got in window.got.items():
            if got.codec is not None and got.codec != self.codec and got.frames:
                log.warning(
                    "archive.playback_codec_mismatch",
                    camera=self.camera,
                    source=name,
                    codec=got.codec,
                    expected=self.codec,
                )
                continue
            if name not in self._params:
                params = got.sdp_params or source_parameter_sets(self.codec, got.frames)
                if params:
                    self._params[name] = params
            out[name] = got.frames
        return out

    def _timestamp(self, capture_time: float) -> int:
        t0, ts0 = self._anchor
        return (ts0 + round((capture_time - t0) * CLOCK_RATE)) & _M32

    def _packets(self, f: StitchedFrame) -> tuple[bytes, ...] | None:
        """``f`` as RTP packets with the extension; None when it is not sent (intra only,
        a RASL picture after a piece's CRA)."""
        fmt = self._fmt
        nals = list(f.frame.nals)
        types = [fmt.nal_type(n) for n in nals]
        found = {t: n for t, n in zip(types, nals, strict=True) if t in fmt.param_types}
        if all(t in found for t in fmt.param_types):
            self._params[f.source] = [found[t] for t in fmt.param_types]
        starts_piece = self._previous is None or f.seam or f.discontinuity or self._seeked
        if starts_piece:
            self._skipping = True
        elif self._skipping:
            slices = set(types) & fmt.vcl_types
            if slices and slices <= fmt.leading_skip_types:
                return None  # RASL: refers to pictures before the piece's CRA
            self._skipping = False
        if self._intra and not f.frame.keyframe:
            return None
        if starts_piece and f.frame.keyframe and not all(t in found for t in fmt.param_types):
            nals[:0] = self._params.get(f.source, [])
        discontinuity = f.discontinuity or self._seeked
        self._note(f)
        self._seeked = False
        ts = self._timestamp(f.capture_time)
        if self._last_ts is not None and ts_diff(ts, self._last_ts) <= 0:
            ts = (self._last_ts + 1) & _M32  # never backwards, never twice
        self._last_ts = ts
        payloads = packetize(fmt, nals, MTU)
        out = []
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            ext = onvif.build_replay_extension(
                f.capture_time,
                clean=f.frame.keyframe,
                end=f.end and i == last,
                discontinuity=discontinuity and i == 0,
                terminal=f.terminal and i == last,
                cseq=self._cseq,
            )
            pkt = rtp.build(self._pt, self._seq, ts, self._ssrc, payload, i == last)
            out.append(onvif.add_extension(pkt, ext))
            self._seq = (self._seq + 1) & 0xFFFF
        return tuple(out)

    def _note(self, f: StitchedFrame) -> None:
        """Count and log what the stream meets: seams, gaps."""
        stats, cam = self._stats, self.camera
        stats.frames[cam] = stats.frames.get(cam, 0) + 1
        prev, self._previous = self._previous, f
        if prev is None:
            return
        if f.seam:
            stats.seams[cam] = stats.seams.get(cam, 0) + 1
            log.info(
                "archive.playback_seam",
                camera=cam,
                source=f.source,
                previous=prev.source,
                at=_iso(f.capture_time),
            )
        elif f.discontinuity and not self._seeked:
            stats.gaps[cam] = stats.gaps.get(cam, 0) + 1
            log.info(
                "archive.playback_gap",
                camera=cam,
                source=f.source,
                after=_iso(prev.capture_time),
                until=_iso(f.capture_time),
                seconds=round(f.capture_time - prev.capture_time, 3),
            )


async def _pull(frames: AsyncGenerator[StitchedFrame, None]) -> StitchedFrame | None:
    try:
        return await anext(frames)
    except StopAsyncIteration:
        return None


async def _dispose(
    frames: AsyncGenerator[StitchedFrame, None],
    pull: asyncio.Future[StitchedFrame | None] | None,
) -> None:
    """Stop a window: its pending read first (a generator cannot be closed while it
    runs), then the generator (which cancels its read-ahead)."""
    if pull is not None:
        pull.cancel()
        with contextlib.suppress(BaseException):
            await pull
    await frames.aclose()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def playback_sdp(
    live: SessionDescription, history: tuple[float, float]
) -> tuple[SessionDescription, int, Codec] | None:
    """The playback SDP made from a camera's live one: its video track only (as track 0),
    the retained history as ``a=range:clock``; with the payload type and codec. None if
    the live stream has no H.264/H.265 video."""
    for m in live.media:
        if m.media != "video" or not m.formats or not m.formats[0].isdigit():
            continue
        pt = int(m.formats[0])
        rtpmap = m.rtpmap(pt)
        if rtpmap is None or rtpmap.encoding.upper() not in ("H264", "H265"):
            continue
        codec: Codec = "h264" if rtpmap.encoding.upper() == "H264" else "h265"
        attrs = [(k, v) for k, v in m.attributes if k not in ("control", "range")]
        media = MediaDescription(
            m.media, 0, m.proto, [str(pt)], [*attrs, ("control", "trackID=0")], m.connection
        )
        session_attrs = [(k, v) for k, v in live.attributes if k != "range"]
        session_attrs.append(
            ("range", f"clock={format_clock(history[0])}-{format_clock(history[1])}")
        )
        sdp = SessionDescription(
            origin=live.origin,
            session_name=live.session_name,
            connection=live.connection,
            attributes=session_attrs,
            media=[media],
        )
        return sdp, pt, codec
    return None


class HistoryJournal(JournalReader, Protocol):
    """What playback needs of the coverage journal."""

    def history_start(self, camera: str) -> float:
        """Where the camera's retained history begins."""


class StitchedPlayback:
    """The proxy's replay: every camera's history from its recorders; implements
    ``ReplayProvider``."""

    def __init__(
        self,
        *,
        journal: HistoryJournal,
        sources: Callable[[str], list[RecorderSource] | None],
        live_sdp: Callable[[str], SessionDescription | None],
        max_sessions: int,
        client: ClientFactory = replay_client,
        wall: Callable[[], float] = time.time,
        part: float = PART_SECONDS,
        hold: float = HOLD,
    ) -> None:
        self.journal = journal
        self._sources = sources
        """The recorders of a camera in priority order (None: no such camera)."""
        self._live_sdp = live_sdp
        self.max_sessions = max_sessions
        self._client = client
        self._wall = wall
        self._part, self._hold = part, hold
        self.stats = PlaybackStats()
        self._rng = random.Random()

    def _described(self, path: str) -> tuple[SessionDescription, int, Codec] | None:
        if self._sources(path) is None:
            return None
        live = self._live_sdp(path)
        made = None
        if live is not None:
            made = playback_sdp(live, (self.journal.history_start(path), self._wall()))
        if made is None:
            # The codec comes from the live stream: none yet (no source since start).
            raise ReplayBusy("the camera has no video source yet")
        return made

    def describe(self, path: str) -> SessionDescription | None:
        """The playback SDP of ``path`` (None: no such camera)."""
        made = self._described(path)
        return None if made is None else made[0]

    def open(self, path: str) -> StitchedSource | None:
        """A playback source for one session (None: no such camera)."""
        made = self._described(path)
        sources = self._sources(path)
        if made is None or sources is None:
            return None
        sdp, pt, codec = made
        return StitchedSource(
            path,
            sdp,
            pt,
            codec,
            journal=self.journal,
            sources=sources,
            history_start=lambda: self.journal.history_start(path),
            stats=self.stats,
            client=self._client,
            max_sessions=self.max_sessions,
            wall=self._wall,
            rng=random.Random(self._rng.getrandbits(64)),
            part=self._part,
            hold=self._hold,
        )
