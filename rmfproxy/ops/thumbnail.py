"""Thumbnails of each source, for the status page, decoded off the packet path.

The keyframe access unit at the start of a source's current GOP is copied on the
event loop (:func:`rmfproxy.relay.snapshot.keyframe`), then decoded with PyAV and
encoded as a small JPEG in a worker thread. Results are cached per source for
``interval`` seconds, so a page polled by many browsers costs one decode per source
per interval.

PyAV (with the FFmpeg libraries and numpy it loads, about 20 MB of RSS) is imported by
the worker thread on the first render, not with this module: a proxy whose thumbnails
are never asked for never loads it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, cast

from rmfproxy.relay.feed import Feed
from rmfproxy.relay.snapshot import KeyframeSnapshot, keyframe
from rmfproxy.rtp import h264, h265
from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp.nal import Depacketizer, to_annexb

if TYPE_CHECKING:
    import av

WIDTH = 320
"""Thumbnail width in pixels (height keeps the aspect ratio)."""

_CODECS = {
    "H264": ("h264", h264.FORMAT, h264.depacketizer),
    "H265": ("hevc", h265.FORMAT, h265.depacketizer),
}
_CODECS["HEVC"] = _CODECS["H265"]


def keyframe_access_unit(key: KeyframeSnapshot) -> tuple[str, bytes] | None:
    """The codec name and Annex B bytes of a keyframe access unit, parameter sets first."""
    codec = _CODECS.get(key.encoding)
    if codec is None:
        return None
    name, fmt, make = codec
    depay: Depacketizer = make()
    nals: list[bytes] = []
    for pkt in key.packets:
        start, end = rtp.payload_span(pkt)
        nals.extend(depay.push(memoryview(pkt)[start:end]))
    if not nals:
        return None
    # A recorder that sends its parameter sets only in the SDP, or every few seconds:
    # the keyframe decodes with the last ones it sent.
    have = {fmt.nal_type(n) for n in nals if len(n) >= fmt.header_len}
    params = key.parameter_sets
    nals = [params[p] for p in fmt.param_types if p not in have and p in params] + nals
    return name, to_annexb(nals)


def render_jpeg(codec: str, annexb: bytes, width: int = WIDTH) -> bytes:
    """Decode one keyframe access unit and encode it as a JPEG ``width`` pixels wide."""
    import av  # here, not at the top: see the module's docstring

    decoder = cast("av.VideoCodecContext", av.CodecContext.create(codec, "r"))
    frames = list(decoder.decode(av.Packet(annexb)))
    frames += list(decoder.decode(None))
    if not frames:
        raise ValueError("the keyframe did not decode")
    frame = frames[0]
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    small = frame.reformat(width=width, height=height, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    packets = list(encoder.encode(small)) + list(encoder.encode(None))
    return b"".join(bytes(p) for p in packets)


@dataclass
class _Cached:
    at: float
    jpeg: bytes | None


class Thumbnails:
    """Cached JPEG thumbnails per (camera, source)."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._cache: dict[tuple[str, int], _Cached] = {}
        self._busy: dict[tuple[str, int], asyncio.Future[bytes | None]] = {}
        self.renders = 0
        self.failures = 0

    async def get(self, feed: Feed, source: int) -> bytes | None:
        """A recent JPEG of the source's picture, or None when it has none to show."""
        key = (feed.camera, source)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached.at < self.interval:
            return cached.jpeg
        busy = self._busy.get(key)
        if busy is not None:
            return await asyncio.shield(busy)
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._busy[key] = fut
        try:
            jpeg = await self._render(feed, source)
            self._cache[key] = _Cached(time.monotonic(), jpeg)
            fut.set_result(jpeg)
            return jpeg
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._busy[key]

    async def _render(self, feed: Feed, source: int) -> bytes | None:
        key = keyframe(feed, source)
        au = None if key is None else keyframe_access_unit(key)
        if au is None:
            return None
        self.renders += 1
        jpeg = await asyncio.to_thread(_render_or_none, *au)
        if jpeg is None:
            self.failures += 1
        return jpeg


def _render_or_none(codec: str, annexb: bytes) -> bytes | None:
    """:func:`render_jpeg`, or None when the keyframe does not decode (in the worker
    thread, where PyAV's errors can be named without importing it on the loop)."""
    import av  # here, not at the top: see the module's docstring

    try:
        return render_jpeg(codec, annexb)
    except (av.error.FFmpegError, ValueError):
        return None
