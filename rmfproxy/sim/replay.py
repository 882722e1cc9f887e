"""A simulated recorder's replay: its archive served the ONVIF way (:mod:`rmfproxy.serve.replay`).

:class:`SimReplayProvider` answers DESCRIBE with the camera's SDP (video only:
the simulator records video) plus ``a=range:clock=`` of what is recorded, and
opens a :class:`SimReplaySource` per session. The source re-packetizes each
recorded access unit (as the recorder served it: its parameter sets, AUD/SEI,
marker with the frame counter) with its own SSRC, a random first sequence number
and RTP timestamps on the capture-time grid (they jump over a gap, as capture
times do), and puts the 0xABAC extension in every packet:

- C on every packet of a keyframe;
- D on the first packet of the first frame after a gap in the recording, and of
  the first frame after a seek (a PLAY with a Range on a session that played
  before): the client must not take it as the continuation of what it had;
- E on the last packet of the last frame before a gap inside the range;
- T on the last packet of the range's last frame.

An open-ended range ends at the newest frame recorded when PLAY was answered.
"""

from __future__ import annotations

import random

from rmfproxy.rtp import h264, h265, onvif
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.replay import (
    ReplayFrame,
    ReplayRangeError,
    ReplayRequest,
    ReplayStart,
    format_clock,
)
from rmfproxy.sim.archive import CameraArchive, RecordedFrame, RecorderArchive
from rmfproxy.sim.camera import CLOCK_RATE, SimCamera


def replay_sdp(camera: SimCamera, archive: CameraArchive) -> SessionDescription:
    """The camera's live SDP without audio, with the recorded range as ``a=range:clock``."""
    text = camera.sdp().serialize()
    audio = text.find("m=audio")
    if audio >= 0:
        text = text[:audio]
    spans = archive.spans()
    if spans:
        rng = f"a=range:clock={format_clock(spans[0][0])}-{format_clock(spans[-1][1])}"
    else:
        rng = "a=range:npt=0-0"
    return SessionDescription.parse(text.replace("a=range:npt=now-", rng))


class SimReplaySource:
    """One replay session over one camera's archive; implements ``ReplaySource``."""

    def __init__(
        self, camera: SimCamera, archive: CameraArchive, rng: random.Random | None = None
    ) -> None:
        self.camera = camera
        self.archive = archive
        rng = rng or random.Random()
        self._ssrc = rng.getrandbits(32)
        self._seq = rng.getrandbits(16)
        self._ts_base = rng.getrandbits(32)
        self._packetize = h264.packetize if camera.clip.codec == "h264" else h265.packetize
        self._next_n: int | None = None
        """Frame number to give out next (None: not positioned)."""
        self._end_n = -1
        self._prev_n: int | None = None
        """Last frame given out (for D after a gap)."""
        self._discontinuity = False
        self._intra = False
        self._cseq = 0
        self._played = False
        self._sdp = replay_sdp(camera, archive)

    # ReplaySource ---------------------------------------------------------------

    def sdp(self) -> SessionDescription:
        """The replay SDP (as at DESCRIBE)."""
        return self._sdp

    def ssrc(self, track: int) -> int:
        """The session's SSRC (one video track)."""
        return self._ssrc

    def seek(self, request: ReplayRequest) -> ReplayStart:
        """Position at the clean point at or before the requested start."""
        arc = self.archive
        first = arc.first()
        if first is None:
            raise ReplayRangeError("nothing recorded")
        origin = first.capture_time
        start, end = request.start, request.end
        if request.unit == "npt":  # seconds from the start of the recording
            start = None if start is None else origin + start
            end = None if end is None else origin + end
        if start is None and request.unit == "" and self._next_n is not None:
            begin = arc.next_after(self._next_n - 1)  # resume after PAUSE
            discontinuity = False
        else:
            begin = arc.keyframe_at_or_before(origin if start is None else start)
            discontinuity = self._played
        if begin is None:
            raise ReplayRangeError("no clean point recorded at or after the start")
        if request.unit == "" and self._next_n is not None:
            end_n = self._end_n  # resuming keeps the range
        else:
            last = arc.last_before(end) if end is not None else arc.last()
            end_n = last.n if last is not None else -1
        if end_n < begin.n:
            raise ReplayRangeError("the range holds no recorded frame")
        self._next_n = begin.n
        self._end_n = end_n
        self._discontinuity = discontinuity
        self._intra = request.intra_only
        self._cseq = request.cseq
        self._played = True
        if discontinuity:
            self._prev_n = None
        end_frame = self._frame_at_or_after(end_n)
        return ReplayStart(
            start=begin.capture_time,
            end=(end_frame.n + 1) / arc.fps if end_frame is not None else None,
            sequence=self._seq,
            rtptime=self._rtp_time(begin.n),
        )

    def close(self) -> None:
        """Nothing to release: the archive is the recorder's."""

    async def next_frame(self) -> ReplayFrame | None:
        """The next frame of the range, packetized, with its extension flags."""
        if self._next_n is None:
            return None
        frame = self._next(self._next_n - 1)
        if frame is None:
            self._next_n = self._end_n + 1  # done: a resume plays nothing
            return None
        following = self._next(frame.n)
        terminal = following is None
        end = not terminal and following is not None and not self._contiguous(frame, following)
        disc = self._discontinuity or (
            self._prev_n is not None and not self.archive.contiguous(self._prev_n, frame.n)
        )
        self._discontinuity = False
        self._prev_n = frame.n
        self._next_n = frame.n + 1
        return self._packets(frame, discontinuity=disc, end=end, terminal=terminal)

    # helpers ----------------------------------------------------------------------

    def _next(self, after: int) -> RecordedFrame | None:
        """The next frame to send after frame number ``after`` within the range."""
        arc = self.archive
        frame = arc.next_after(after)
        while frame is not None and self._intra and not frame.keyframe and frame.n <= self._end_n:
            frame = arc.next_after(frame.n)
        if frame is None or frame.n > self._end_n:
            return None
        return frame

    def _contiguous(self, a: RecordedFrame, b: RecordedFrame) -> bool:
        """No recording gap between ``a`` and ``b`` (frames skipped for intra are no gap)."""
        return self.archive.contiguous(a.n, b.n)

    def _frame_at_or_after(self, n: int) -> RecordedFrame | None:
        return self.archive.next_after(n - 1)

    def _rtp_time(self, n: int) -> int:
        return (self._ts_base + n * CLOCK_RATE // self.archive.fps) & 0xFFFFFFFF

    def _packets(
        self, frame: RecordedFrame, *, discontinuity: bool, end: bool, terminal: bool
    ) -> ReplayFrame:
        payloads = self._packetize(list(frame.nals), self.camera.mtu)
        ts = self._rtp_time(frame.n)
        out = []
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            ext = onvif.build_replay_extension(
                frame.capture_time,
                clean=frame.keyframe,
                end=end and i == last,
                discontinuity=discontinuity and i == 0,
                terminal=terminal and i == last,
                cseq=self._cseq,
            )
            pkt = rtp.build(self.camera.payload_type, self._seq, ts, self._ssrc, payload, i == last)
            out.append(onvif.add_extension(pkt, ext))
            self._seq = (self._seq + 1) & 0xFFFF
        return ReplayFrame(frame.capture_time, frame.keyframe, tuple(out))


class SimReplayProvider:
    """Replay of a simulated recorder's archive; implements ``ReplayProvider``."""

    def __init__(
        self, cameras: dict[str, SimCamera], archive: RecorderArchive, seed: int | None = None
    ) -> None:
        self.cameras = cameras
        self.archive = archive
        self._rng = random.Random(seed)

    def describe(self, path: str) -> SessionDescription | None:
        """The replay SDP of ``path``."""
        cam = self.cameras.get(path)
        if cam is None:
            return None
        return replay_sdp(cam, self.archive.camera(path, cam.clip.fps))

    def open(self, path: str) -> SimReplaySource | None:
        """A replay source for one session."""
        cam = self.cameras.get(path)
        if cam is None:
            return None
        arc = self.archive.camera(path, cam.clip.fps)
        return SimReplaySource(cam, arc, random.Random(self._rng.getrandbits(64)))
