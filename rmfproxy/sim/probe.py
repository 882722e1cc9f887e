"""An independent RTSP client for tests and benchmarks: FFmpeg's RTSP demuxer through PyAV.

It counts what a real client experiences: decoded frames, decode errors,
FFmpeg's own warnings (missed packets, bad sequence numbers, corrupt frames)
and, from the simulator's marker NALs, exactly which frames arrived.
Blocking: call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import av
import av.logging

from rmfproxy.sim.marker import find_marker

_WARN_WORDS = (
    "missed",
    "bad cseq",
    "corrupt",
    "error",
    "non monotonically",
    "concealing",
    "decode_slice",
    "no frame",
    "invalid",
    # H.265/H.264 reference and parameter-set trouble (a delta frame first, mixed streams)
    "could not find ref",
    "duplicate poc",
    "non-existing",
    "slice type",
)


@dataclass
class ProbeResult:
    """What one client saw."""

    frames_decoded: int = 0
    first_frame_key: bool | None = None
    """Whether the first decoded picture was a keyframe (None before any)."""
    first_packet_key: bool | None = None
    """Whether the first video packet received was a keyframe (None before any): a decoder
    drops the pictures before its first keyframe without a word, so a stream started in
    the middle of a GOP shows only here."""
    decode_errors: int = 0
    packets: int = 0
    counters: list[int | None] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stream_warnings: int = 0
    codec_name: str = ""
    width: int = 0
    height: int = 0
    error: str | None = None
    audio_packets: int = 0
    audio_frames_decoded: int = 0
    audio_decode_errors: int = 0
    audio_counters: list[int] = field(default_factory=list)
    """The simulator's counter of each audio packet (first four payload bytes)."""
    audio_pts: list[int] = field(default_factory=list)

    def lost(self) -> int:
        """Frames missing between consecutive counters."""
        known = [c for c in self.counters if c is not None]
        return sum(b - a - 1 for a, b in itertools.pairwise(known) if b > a + 1)

    def repeated(self) -> int:
        """Frames whose counter did not advance."""
        known = [c for c in self.counters if c is not None]
        return sum(1 for a, b in itertools.pairwise(known) if b <= a)

    def beyond_span(self) -> int:
        """Decoded frames beyond the counters' span: more pictures than the camera made in
        the span the client saw means one went twice, even one whose counter was not read."""
        known = [c for c in self.counters if c is not None]
        return self.frames_decoded - (max(known) - min(known) + 1) if known else 0

    def consecutive(self) -> bool:
        """Nothing lost, nothing repeated."""
        return self.lost() == 0 and self.repeated() == 0

    def audio_lost(self) -> int:
        """Audio packets missing between consecutive counters."""
        c = self.audio_counters
        return sum(b - a - 1 for a, b in itertools.pairwise(c) if b > a + 1)

    def audio_repeated(self) -> int:
        """Audio packets whose counter did not advance."""
        return sum(1 for a, b in itertools.pairwise(self.audio_counters) if b <= a)

    def audio_pts_backwards(self) -> int:
        """Audio packets whose presentation time went backwards."""
        return sum(1 for a, b in itertools.pairwise(self.audio_pts) if b < a)

    def max_gap_seconds(self) -> float:
        """Longest wall-clock interval between consecutive packets."""
        a = self.arrivals
        return max((y - x for x, y in itertools.pairwise(a)), default=0.0)


def read_rtsp(
    url: str,
    *,
    transport: Literal["tcp", "udp"] = "tcp",
    seconds: float = 10.0,
    max_frames: int | None = None,
    open_timeout: float = 10.0,
    stop: threading.Event | None = None,
    options: dict[str, str] | None = None,
) -> ProbeResult:
    """Read ``url`` for ``seconds`` of wall clock (or ``max_frames``), decoding every packet.

    ``options``: more FFmpeg options, e.g. ``{"tls_verify": "1", "ca_file": path}`` for
    ``rtsps://`` (FFmpeg 6+ hands them to its TLS layer).
    """
    result = ProbeResult()
    with av.logging.Capture(local=True) as logs:
        try:
            container = av.open(
                url,
                options={
                    "rtsp_transport": transport,
                    "timeout": str(int(open_timeout * 1e6)),
                    **(options or {}),
                },
                timeout=(open_timeout, 5.0),
            )
        except (av.error.FFmpegError, OSError) as exc:
            result.error = f"open failed: {exc}"
            return result
        try:
            _read(container, result, seconds, max_frames, stop)
        finally:
            container.close()
    for _level, _name, line in logs:
        text = str(line).strip()
        if any(w in text.lower() for w in _WARN_WORDS):
            result.stream_warnings += 1
            if len(result.warnings) < 50:
                result.warnings.append(text)
    return result


def _read(
    container: av.container.InputContainer,
    result: ProbeResult,
    seconds: float,
    max_frames: int | None,
    stop: threading.Event | None,
) -> None:
    stream = container.streams.video[0]
    audio = container.streams.audio[0] if container.streams.audio else None
    result.codec_name = stream.codec_context.name
    deadline = time.monotonic() + seconds
    wanted = [stream] if audio is None else [stream, audio]
    try:
        for packet in container.demux(wanted):
            now = time.monotonic()
            if packet.size == 0:
                continue
            if packet.stream is audio:
                _audio_packet(packet, result)
                continue
            result.packets += 1
            if result.first_packet_key is None:
                result.first_packet_key = bool(packet.is_keyframe)
            result.arrivals.append(now)
            marker = find_marker(bytes(packet))
            result.counters.append(marker[0] if marker else None)
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                result.decode_errors += 1
                frames = []
            for frame in frames:
                if getattr(frame, "is_corrupt", False):
                    result.decode_errors += 1
                result.frames_decoded += 1
                if isinstance(frame, av.VideoFrame):
                    result.width, result.height = frame.width, frame.height
                    if result.first_frame_key is None:
                        result.first_frame_key = bool(frame.key_frame)
            if now > deadline or (stop is not None and stop.is_set()):
                break
            if max_frames is not None and result.frames_decoded >= max_frames:
                break
    except av.error.FFmpegError as exc:
        result.error = f"read failed: {exc}"
    # Drain the decoder: frames still in its pipeline were received and count.
    try:
        for frame in stream.codec_context.decode(None):
            if getattr(frame, "is_corrupt", False):
                result.decode_errors += 1
            result.frames_decoded += 1
    except av.error.FFmpegError:
        result.decode_errors += 1


def _audio_packet(packet: av.Packet[Any], result: ProbeResult) -> None:
    result.audio_packets += 1
    data = bytes(packet)
    if len(data) >= 4:
        result.audio_counters.append(int.from_bytes(data[:4], "big"))
    if packet.pts is not None:
        result.audio_pts.append(packet.pts)
    try:
        result.audio_frames_decoded += len(packet.decode())
    except av.error.FFmpegError:
        result.audio_decode_errors += 1
