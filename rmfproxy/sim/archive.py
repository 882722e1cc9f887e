"""What a simulated recorder recorded: per camera, the access units it served, by capture time.

A real recorder writes the camera's stream to disk while it runs; when it is
killed, frozen or restarting it writes nothing, and its archive has a real gap
there (ONVIF Profile G calls the pieces "contiguous sections"). The simulator
records the same way: the camera's frame loop hands every access unit it sends
to :meth:`CameraArchive.record` (frame ``n`` captured at ``n / fps``, as the
marker says), and a frozen camera or a recorder that is down records nothing.

A section starts at a keyframe (frames after a gap are not recorded until the
next one), and retention drops whole GOPs. Frames are kept in memory as the
recorder served them (its own parameter-set schedule, AUD and SEI included),
bounded by retention seconds and by bytes: the oldest go first. Contiguity is
by frame number: frame ``n + 1`` right after ``n`` continues a span, anything
else starts a new one.

No I/O and no clock reads: the camera passes the frame number and the data.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

_EPS = 1e-6
"""Frames: capture times are n / fps; float error must never move a frame across t."""


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One access unit as the recorder served (and recorded) it."""

    n: int
    """Frame number (the marker's counter)."""
    capture_time: float
    """Unix time the frame was captured: ``n / fps``."""
    keyframe: bool
    """The access unit is a clean point (IDR/IRAP, parameter sets in front)."""
    nals: tuple[bytes, ...]
    """Its NAL units (no start codes), in order."""

    @property
    def size(self) -> int:
        """Bytes of NAL data."""
        return sum(len(x) for x in self.nals)


class CameraArchive:
    """The recording of one camera on one recorder."""

    def __init__(self, fps: int, *, retention: float = 600.0, max_bytes: int = 256 << 20) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        if retention <= 0 or max_bytes <= 0:
            raise ValueError("retention and max_bytes must be positive")
        self.fps = fps
        self.retention = retention
        self.max_bytes = max_bytes
        self.paused = False
        """While True nothing is recorded (the recorder is down)."""
        self._frames: deque[RecordedFrame] = deque()
        self._numbers: deque[int] = deque()  # frame numbers, for bisect
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def frame_duration(self) -> float:
        """Seconds between two frames."""
        return 1.0 / self.fps

    def record(self, n: int, nals: list[bytes] | tuple[bytes, ...], keyframe: bool) -> None:
        """Keep frame ``n`` (ignored while paused, or if not newer than the last one)."""
        if self.paused or (self._numbers and n <= self._numbers[-1]):
            return
        if not keyframe and (not self._numbers or n != self._numbers[-1] + 1):
            # A recording (re)starts at a keyframe, as a real recorder's does: a section
            # starting on a delta frame could not be decoded (its references are lost).
            return
        frame = RecordedFrame(n, n / self.fps, keyframe, tuple(bytes(x) for x in nals))
        self._frames.append(frame)
        self._numbers.append(n)
        self.bytes += frame.size
        oldest_n = n - int(self.retention * self.fps)
        while self._frames and (self._numbers[0] < oldest_n or self.bytes > self.max_bytes):
            self._drop_oldest()
            while self._frames and not self._frames[0].keyframe:
                self._drop_oldest()  # whole GOPs go: the oldest kept frame is a keyframe

    def _drop_oldest(self) -> None:
        self.bytes -= self._frames.popleft().size
        self._numbers.popleft()

    def spans(self) -> list[tuple[float, float]]:
        """Contiguous recording as ``(start, end)`` Unix times: ``start`` is the first
        frame's capture time, ``end`` the last frame's plus one frame duration."""
        out: list[tuple[float, float]] = []
        first = prev = None
        for n in self._numbers:
            if prev is None or n != prev + 1:
                if first is not None and prev is not None:
                    out.append((first / self.fps, (prev + 1) / self.fps))
                first = n
            prev = n
        if first is not None and prev is not None:
            out.append((first / self.fps, (prev + 1) / self.fps))
        return out

    def frames(self, start: float, end: float | None = None) -> list[RecordedFrame]:
        """Recorded frames captured in ``[start, end)`` (``end`` None: up to the newest)."""
        i = self._index_at(start)
        j = len(self._numbers) if end is None else self._index_at(end)
        return [self._frames[k] for k in range(i, j)]

    def keyframe_at_or_before(self, t: float) -> RecordedFrame | None:
        """Where a replay asked to start at ``t`` starts (ONVIF: at a clean point).

        The last keyframe at or before ``t`` in the contiguous span recorded at ``t``;
        if ``t`` falls in a gap, or its span has no keyframe before ``t``, the first
        keyframe after it. None if there is none.
        """
        last = math.floor(t * self.fps + _EPS)
        i = bisect.bisect_right(self._numbers, last)
        if i and self._numbers[i - 1] == last:
            k = i - 1
            while k >= 0:
                f = self._frames[k]
                if f.keyframe:
                    return f
                if k == 0 or self._numbers[k - 1] != self._numbers[k] - 1:
                    break  # the span begins without a keyframe before t
                k -= 1
        for k in range(i, len(self._frames)):
            if self._frames[k].keyframe:
                return self._frames[k]
        return None

    def next_after(self, n: int) -> RecordedFrame | None:
        """The first recorded frame after frame number ``n``."""
        i = bisect.bisect_right(self._numbers, n)
        return self._frames[i] if i < len(self._frames) else None

    def contiguous(self, a: int, b: int) -> bool:
        """True if every frame from number ``a`` to ``b`` (inclusive) is recorded."""
        i = bisect.bisect_left(self._numbers, a)
        j = bisect.bisect_left(self._numbers, b)
        ok_a = i < len(self._numbers) and self._numbers[i] == a
        ok_b = j < len(self._numbers) and self._numbers[j] == b
        return ok_a and ok_b and j - i == b - a

    def last_before(self, t: float) -> RecordedFrame | None:
        """The last recorded frame captured before ``t``."""
        i = self._index_at(t)
        return self._frames[i - 1] if i else None

    def first(self) -> RecordedFrame | None:
        """The oldest recorded frame."""
        return self._frames[0] if self._frames else None

    def last(self) -> RecordedFrame | None:
        """The newest recorded frame."""
        return self._frames[-1] if self._frames else None

    def _index_at(self, t: float) -> int:
        """Index of the first frame captured at or after ``t``."""
        return bisect.bisect_left(self._numbers, math.ceil(t * self.fps - _EPS))


class RecorderArchive:
    """Every camera's recording on one simulated recorder."""

    def __init__(self, *, retention: float = 600.0, max_bytes: int = 256 << 20) -> None:
        self.retention = retention
        self.max_bytes = max_bytes
        self.cameras: dict[str, CameraArchive] = {}

    def camera(self, path: str, fps: int) -> CameraArchive:
        """The archive of ``path`` (created on first use)."""
        arc = self.cameras.get(path)
        if arc is None:
            arc = self.cameras[path] = CameraArchive(
                fps, retention=self.retention, max_bytes=self.max_bytes
            )
        return arc

    def pause(self, on: bool = True) -> None:
        """Stop (or resume) recording every camera: the recorder is down."""
        for arc in self.cameras.values():
            arc.paused = on

    def spans(self, camera: str) -> list[tuple[float, float]]:
        """Contiguous recording of ``camera`` (empty if never recorded)."""
        arc = self.cameras.get(camera)
        return arc.spans() if arc is not None else []

    def frames(self, camera: str, start: float, end: float | None = None) -> list[RecordedFrame]:
        """Frames of ``camera`` captured in ``[start, end)``."""
        arc = self.cameras.get(camera)
        return arc.frames(start, end) if arc is not None else []
