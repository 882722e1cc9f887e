"""Replay of recorded video over RTSP, as ONVIF recorders serve it (ONVIF Streaming
Specification, chapter 6 "Playback").

A client asks for history with ``Require: onvif-replay`` on every request; a
server without replay answers ``551 Option not supported`` with
``Unsupported: onvif-replay`` (RFC 2326 §12.32). PLAY carries:

- ``Range: clock=20261126T101500.000Z-20261126T101600Z`` (absolute capture times,
  end optional) or ``npt=12.5-`` (seconds from the start of the recording);
  without a Range, PLAY resumes where PAUSE stopped (or starts at the beginning);
- ``Rate-Control: yes`` (default, real time at ``Scale`` speed) or ``no`` (as fast
  as the client reads: every packet waits while the RTSP connection's write buffer
  is over its high-water mark, so TCP back-pressure sets the pace and nothing is
  ever dropped);
- ``Scale``: speed for ``Rate-Control: yes``; a negative Scale (reverse play) is
  answered ``551`` (not supported here);
- ``Frames: intra`` (or ``intra/<ms>``): keyframes only.

A replay starts at a clean point: the keyframe at or before the requested start.
Every packet carries the 0xABAC header extension (:mod:`rmfproxy.rtp.onvif`) with
the frame's capture time; gaps in the recording are not filled: the next frame
simply comes with D. With ``Rate-Control: yes`` the wall-clock wait over a gap is
capped (``ReplayStream.max_gap_wait``, 1 s), so a client does not wait minutes for
the next recorded frame. Over UDP there is no back-pressure: ``Rate-Control: no``
is then paced at ``UDP_SPEED`` times real time instead (ONVIF §6.1 advises TCP for
replay anyway).

The pieces: a :class:`ReplayProvider` (given to :class:`RtspServer`) opens a
:class:`ReplaySource` per session: the media (packets built with their extension,
numbering, end of range). :class:`ReplayStream` wraps one source as the session's
``MediaStream`` and owns pacing and back-pressure, so the live fan-out is untouched:
the connection attaches the client's sink at PLAY and detaches it at PAUSE, as for
live.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import math
import re
import time
from dataclasses import dataclass
from typing import Protocol

import structlog

from rmfproxy.rtp import rtcp
from rmfproxy.rtsp.message import Headers
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.stream import MediaSink, TrackStart

log = structlog.get_logger(__name__)

REPLAY_TAG = "onvif-replay"
"""The option tag of ONVIF replay in Require/Unsupported."""
UDP_SPEED = 4.0
"""Speed of a ``Rate-Control: no`` replay over UDP (no back-pressure there)."""

_CLOCK = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?Z$")


class ReplayRangeError(ValueError):
    """The requested range holds nothing this recorder can play (457 Invalid Range)."""


class ReplayUnsupported(ValueError):
    """A replay feature this server does not implement (551 Option not supported)."""


class ReplayBusy(Exception):
    """Too many replays at once (503 Service Unavailable, Retry-After)."""


def parse_clock(value: str) -> float:
    """``YYYYMMDDTHHMMSS[.fraction]Z`` (RFC 2326 §3.7, UTC) as Unix time."""
    m = _CLOCK.match(value.strip())
    if m is None:
        raise ValueError(f"clock time must be YYYYMMDDTHHMMSS[.fff]Z, got {value[:40]!r}")
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise ValueError(f"clock time out of range: {value[:40]!r}")
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + frac


def format_clock(t: float) -> str:
    """Unix time as ``YYYYMMDDTHHMMSS.fffZ`` (milliseconds, truncated so that a
    formatted start never lies after the frame it names)."""
    ms = math.floor(t * 1000 + 1e-6)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def requires(headers: Headers) -> list[str]:
    """The option tags of every Require header (RFC 2326 §12.32)."""
    return [t.strip() for v in headers.get_all("Require") for t in v.split(",") if t.strip()]


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What one PLAY asks of a replay session."""

    unit: str
    """"clock", "npt" or "" (no Range: resume, or start of the recording)."""
    start: float | None
    """Unix time (clock) or seconds from the start of the recording (npt)."""
    end: float | None
    """Same unit; None: to the end of what is recorded."""
    rate_control: bool = True
    """True: real time at ``scale``; False: as fast as the client reads."""
    scale: float = 1.0
    """Speed (Rate-Control yes)."""
    intra_only: bool = False
    """Frames: intra: keyframes only."""
    cseq: int = 0
    """CSeq of the PLAY request (its low byte goes into every packet's extension)."""

    @classmethod
    def from_headers(cls, headers: Headers) -> ReplayRequest:
        """From a PLAY request's headers; ``ValueError`` (400) naming the bad header,
        ``ReplayUnsupported`` (551) for reverse play or an unknown Frames value."""
        unit, start, end = "", None, None
        value = headers.get("Range")
        if value is not None:
            spec = value.split(";")[0].strip()
            unit, sep, rng = spec.partition("=")
            unit = unit.strip().lower()
            # Neither clock nor npt times hold a '-': the first one separates start and end.
            a, dash, b = rng.partition("-")
            if not sep or not dash or unit not in ("clock", "npt"):
                raise ValueError(
                    f"Range must be clock=START-[END] or npt=START-[END]: {spec[:60]!r}"
                )
            if unit == "clock":
                start = parse_clock(a) if a.strip() else None
                end = parse_clock(b) if b.strip() else None
            else:
                start = _npt(a) if a.strip() and a.strip() != "now" else None
                end = _npt(b) if b.strip() else None
        rate = (headers.get("Rate-Control") or "yes").strip().lower()
        if rate not in ("yes", "no"):
            raise ValueError(f"Rate-Control must be yes or no, got {rate[:20]!r}")
        scale = 1.0
        if (sv := headers.get("Scale")) is not None:
            try:
                scale = float(sv)
            except ValueError:
                raise ValueError(f"Scale must be a number, got {sv[:20]!r}") from None
            if not math.isfinite(scale) or scale == 0:
                raise ValueError(f"Scale must be a non-zero number, got {sv[:20]!r}")
            if scale < 0:
                raise ReplayUnsupported("reverse replay (negative Scale) is not supported")
        frames = (headers.get("Frames") or "all").strip().lower()
        if frames not in ("all", "predicted") and frames.split("/")[0] != "intra":
            raise ReplayUnsupported(f"Frames {frames[:20]!r} is not supported")
        cseq = (headers.get("CSeq") or "0").strip()
        return cls(
            unit,
            start,
            end,
            rate_control=rate == "yes",
            scale=scale,
            intra_only=frames.startswith("intra"),
            cseq=int(cseq) if cseq.isdigit() else 0,
        )


def _npt(value: str) -> float:
    v = value.strip()
    try:
        if ":" in v:  # npt-hhmmss (RFC 2326 §3.6)
            h, m, s = v.split(":")
            out = int(h) * 3600 + int(m) * 60 + float(s)
        else:
            out = float(v)
    except ValueError:
        raise ValueError(f"npt time must be seconds or h:mm:ss, got {v[:20]!r}") from None
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"npt time must be non-negative, got {v[:20]!r}")
    return out


@dataclass(frozen=True, slots=True)
class ReplayFrame:
    """One frame's RTP packets, ready to send (numbered, 0xABAC extension in each)."""

    capture_time: float
    """Unix time of the frame's capture (what its extensions carry)."""
    keyframe: bool
    """The frame is a clean point."""
    packets: tuple[bytes, ...]
    """Its RTP packets, video track."""


@dataclass(frozen=True, slots=True)
class ReplayStart:
    """Where a PLAY actually starts, for its reply (Range, RTP-Info)."""

    start: float
    """Capture time of the first frame (the clean point at or before the request)."""
    end: float | None
    """End of the range played (exclusive, Unix time), if known."""
    sequence: int
    """RTP sequence number of the first packet."""
    rtptime: int
    """RTP timestamp of the first packet."""

    def range_header(self) -> str:
        """The Range value of the PLAY reply (ONVIF: absolute clock times)."""
        end = format_clock(self.end) if self.end is not None else ""
        return f"clock={format_clock(self.start)}-{end}"


class ReplaySource(Protocol):
    """One replay session's media, made by a :class:`ReplayProvider` (no I/O)."""

    def sdp(self) -> SessionDescription:
        """The session description (DESCRIBE answered it already; SETUP checks tracks)."""

    def ssrc(self, track: int) -> int:
        """The SSRC of ``track``."""

    def seek(self, request: ReplayRequest) -> ReplayStart:
        """Position for ``request`` (no Range: resume after the last frame given out);
        ``ReplayRangeError`` if nothing recorded lies in the range, ``ReplayBusy`` if
        it cannot be played now."""

    async def next_frame(self) -> ReplayFrame | None:
        """The next frame of the range, or None once the range is done (the frame
        before carried T)."""

    def close(self) -> None:
        """The session ended (idempotent)."""


class ReplayProvider(Protocol):
    """What a server that replays recordings knows: the cameras it has history of."""

    def describe(self, path: str) -> SessionDescription | None:
        """The replay SDP of ``path`` (None: no such camera, 404)."""

    def open(self, path: str) -> ReplaySource | None:
        """A new replay source for one session on ``path`` (None: 404)."""


class ReplayStream:
    """One session's replay as a ``MediaStream``: attach plays, detach pauses.

    ``writable`` is the RTSP connection's "not over the high-water mark" event: with
    TCP every packet waits for it (back-pressure). The task that sends is owned here:
    detach cancels it, and it logs anything unexpected.
    """

    max_gap_wait = 1.0
    """Rate-Control yes: seconds at most waited over a gap in the recording."""

    def __init__(self, source: ReplaySource, writable: asyncio.Event, *, path: str = "") -> None:
        self.source = source
        self.path = path
        self._writable = writable
        self._request: ReplayRequest | None = None
        self._over_tcp = True
        self._start: ReplayStart | None = None
        self._task: asyncio.Task[None] | None = None
        self._sink: MediaSink | None = None
        self._pending: list[tuple[bytes, bool]] = []
        """Packets of a frame a PAUSE interrupted: a resume sends them first."""
        self.frames_sent = 0
        self.backpressure_waits = 0
        """Times a packet waited for the client to read (Rate-Control: no over TCP)."""
        self.finished = False
        """The last PLAY's range was sent completely (T went out)."""

    # set up by the connection at PLAY -------------------------------------------

    def seek(self, request: ReplayRequest, *, over_tcp: bool) -> ReplayStart:
        """Position for the next attach (ReplayRangeError: 457)."""
        self._start = self.source.seek(request)
        if request.unit or request.start is not None:
            self._pending = []  # a seek: the interrupted frame is not wanted any more
        self._request = request
        self._over_tcp = over_tcp
        self.finished = False
        return self._start

    # MediaStream -------------------------------------------------------------------

    def sdp(self) -> SessionDescription:
        """The replay session description."""
        return self.source.sdp()

    def ssrc(self, track: int) -> int:
        """The SSRC of ``track``."""
        return self.source.ssrc(track)

    def start_points(self) -> dict[int, TrackStart]:
        """Where the next PLAY starts (RTP-Info)."""
        if self._start is None:
            return {}
        return {0: TrackStart(self._start.sequence, self._start.rtptime)}

    def attach(self, sink: MediaSink) -> None:
        """Start sending the positioned range to ``sink``."""
        if self._sink is not None:
            self.detach(self._sink)
        request = self._request or ReplayRequest("", None, None)
        self._sink = sink
        self._task = asyncio.create_task(self._run(sink, request), name=f"replay-{self.path}")
        self._task.add_done_callback(self._done)

    def detach(self, sink: MediaSink) -> None:
        """Stop sending (PAUSE, TEARDOWN, session closed); the source keeps its place."""
        if sink is not self._sink:
            return
        self._sink = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        """The session ended: stop sending, let the source go."""
        if self._sink is not None:
            self.detach(self._sink)
        self.source.close()

    # sending -------------------------------------------------------------------------

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("replay.failed", camera=self.path, exc_info=exc)

    async def _run(self, sink: MediaSink, request: ReplayRequest) -> None:
        loop = asyncio.get_running_loop()
        pace = request.rate_control or not self._over_tcp
        speed = abs(request.scale) if request.rate_control else UDP_SPEED
        anchor: tuple[float, float] | None = None  # (loop time, capture time)
        prev: float | None = None
        writable = self._writable
        while self._pending:
            if not writable.is_set() and self._over_tcp:
                await writable.wait()
            pkt, key = self._pending.pop(0)
            sink.deliver_many(0, ((pkt, key),))
        while True:
            try:
                frame = await self.source.next_frame()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the recorders behind it failed: end the range
                log.error("replay.source_failed", camera=self.path, error=str(exc)[:200])
                break
            if frame is None:
                break
            t = frame.capture_time
            if pace:
                if anchor is None:
                    anchor = (loop.time(), t)
                elif prev is not None and (t - prev) / speed > self.max_gap_wait:
                    # A gap in the recording: wait max_gap_wait, not the whole gap.
                    anchor = (anchor[0], anchor[1] + (t - prev) - self.max_gap_wait * speed)
                delay = anchor[0] + (t - anchor[1]) / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            prev = t
            self._pending = [(p, frame.keyframe and i == 0) for i, p in enumerate(frame.packets)]
            while self._pending:
                if not writable.is_set() and self._over_tcp:
                    self.backpressure_waits += 1
                    await writable.wait()  # the client reads slower than we send
                pkt, key = self._pending.pop(0)
                sink.deliver_many(0, ((pkt, key),))
            self.frames_sent += 1
            if not pace:
                await asyncio.sleep(0)  # other clients and requests between frames
        self.finished = True
        # End of the range: an RTCP BYE (RFC 3550 §6.6) tells the client no more comes.
        with contextlib.suppress(Exception):
            sink.deliver_rtcp(0, rtcp.build_bye([self.source.ssrc(0)]))
