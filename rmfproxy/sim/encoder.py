"""Synthetic cameras encoded once with PyAV (libx264 / libx265), looped at serve time.

Pictures are cheap numpy drawings that move (a sweeping bar) and show the
frame number in seven-segment digits, so a person watching the demo sees
motion and a counter. The encoder runs without B-frames (decode order is
presentation order), with a fixed GOP and parameter sets repeated in-band
before every keyframe. Each access unit gets a marker NAL
(:mod:`rmfproxy.sim.marker`) that the recorder rewrites with the live frame
counter at send time.
"""

from __future__ import annotations

import base64
import fractions
import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Literal, cast

import av
import numpy as np

from rmfproxy.rtp.nal import split_annexb
from rmfproxy.sim.marker import make_marker_nal

Codec = Literal["h264", "h265"]

# Seven-segment layout: segments a..g lit for each digit.
_SEGMENTS = [
    "abcdef",
    "bc",
    "abdeg",
    "abcdg",
    "bcfg",
    "acdfg",
    "acdefg",
    "abc",
    "abcdefg",
    "abcdfg",
]


@dataclass(frozen=True)
class AccessUnit:
    """One coded picture: its NAL units (no start codes) in decode order."""

    nals: list[bytes]
    keyframe: bool
    marker_index: int
    """Position of the marker NAL in ``nals``."""


@dataclass(frozen=True)
class EncodedClip:
    """A looped camera: access units, parameter sets and timing."""

    codec: Codec
    width: int
    height: int
    fps: int
    gop: int
    access_units: list[AccessUnit]
    sps: bytes
    pps: bytes
    vps: bytes | None

    @property
    def duration(self) -> float:
        """Seconds of one loop."""
        return len(self.access_units) / self.fps

    def sdp_fmtp(self, payload_type: int) -> str:
        """The ``a=fmtp`` value (RFC 6184 §8.1 / RFC 7798 §7.1)."""
        if self.codec == "h264":
            return (
                f"{payload_type} packetization-mode=1;profile-level-id={self.sps[1:4].hex()};"
                f"sprop-parameter-sets={b64(self.sps)},{b64(self.pps)}"
            )
        assert self.vps is not None
        return (
            f"{payload_type} sprop-vps={b64(self.vps)};sprop-sps={b64(self.sps)};"
            f"sprop-pps={b64(self.pps)}"
        )


def b64(data: bytes) -> str:
    """Base64 text of ``data``."""
    return base64.b64encode(data).decode()


def _h264_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def _h265_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def _digit_mask(h: int, w: int, text: str, scale: int) -> np.ndarray:
    """A boolean mask with ``text`` (digits) drawn in seven-segment style at the top left."""
    mask = np.zeros((h, w), dtype=bool)
    dw, dh, t = 6 * scale, 10 * scale, max(1, scale)
    x0, y0 = 2 * scale, 2 * scale
    for ch in text:
        if x0 + dw > w or y0 + dh > h:
            break
        segs = _SEGMENTS[int(ch)]
        half = dh // 2
        boxes = {
            "a": (y0, y0 + t, x0, x0 + dw),
            "d": (y0 + dh - t, y0 + dh, x0, x0 + dw),
            "g": (y0 + half - t // 2, y0 + half - t // 2 + t, x0, x0 + dw),
            "f": (y0, y0 + half, x0, x0 + t),
            "b": (y0, y0 + half, x0 + dw - t, x0 + dw),
            "e": (y0 + half, y0 + dh, x0, x0 + t),
            "c": (y0 + half, y0 + dh, x0 + dw - t, x0 + dw),
        }
        for s in segs:
            y1, y2, xa, xb = boxes[s]
            mask[y1:y2, xa:xb] = True
        x0 += dw + 2 * scale
    return mask


def _picture(i: int, w: int, h: int, base: np.ndarray, tint: tuple[int, int, int]) -> np.ndarray:
    img = base.copy()
    bar = max(4, w // 16)
    x = (i * max(1, w // 50)) % (w - bar)
    img[:, x : x + bar] = tint
    scale = max(1, h // 60)
    img[_digit_mask(h, w, f"{i:05d}", scale)] = (255, 255, 255)
    return img


@functools.lru_cache(maxsize=32)
def encode_clip(
    codec: Codec = "h264",
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    gop: int = 25,
    bitrate: int = 500_000,
    seconds: float = 4.0,
    label: str = "cam",
) -> EncodedClip:
    """Encode a looping synthetic camera; the frame count is a whole number of GOPs."""
    if width % 2 or height % 2 or width < 64 or height < 64:
        raise ValueError("width and height must be even and at least 64")
    if not 1 <= fps <= 120 or gop < 1:
        raise ValueError("fps must be 1..120 and gop at least 1")
    frames = max(1, math.ceil(seconds * fps / gop)) * gop
    name = "libx264" if codec == "h264" else "libx265"
    ctx = cast(av.VideoCodecContext, av.CodecContext.create(name, "w"))
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.bit_rate = bitrate
    ctx.gop_size = gop
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1"
    if codec == "h264":
        # One slice per picture keeps packets few; aud=0: no access unit delimiters.
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": params + ":aud=0:sliced-threads=0:threads=1",
        }
        param_types, sei_type = {7, 8}, 6
        ntype = _h264_type
    else:
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x265-params": params + ":log-level=none:open-gop=0:aud=0:frame-threads=1",
        }
        param_types, sei_type = {32, 33, 34}, 39
        ntype = _h265_type
    digest = hashlib.sha256(label.encode()).digest()
    tint = (digest[0] | 0x40, digest[1] | 0x40, digest[2] | 0x40)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [(xx * 255 // width), (yy * 255 // height), np.full_like(xx, digest[3] // 2)], axis=-1
    ).astype(np.uint8)
    packets = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(_picture(i, width, height, base, tint), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    if len(packets) != frames:
        raise RuntimeError(f"encoder produced {len(packets)} packets for {frames} frames")
    aus: list[AccessUnit] = []
    sps = pps = b""
    vps: bytes | None = None
    for idx, pkt in enumerate(packets):
        nals = [n for n in split_annexb(bytes(pkt)) if ntype(n) not in (sei_type, 9, 35)]
        key = idx % gop == 0
        if key:
            types = [ntype(n) for n in nals]
            if not param_types <= set(types):
                raise RuntimeError("keyframe without in-band parameter sets")
            for n in nals:
                t = ntype(n)
                if t in (7, 33):
                    sps = n
                elif t in (8, 34):
                    pps = n
                elif t == 32:
                    vps = n
        first_slice = next(i for i, n in enumerate(nals) if ntype(n) not in param_types)
        nals.insert(first_slice, make_marker_nal(codec, idx, 0))
        aus.append(AccessUnit(nals, key, first_slice))
    return EncodedClip(codec, width, height, fps, gop, aus, sps, pps, vps)
