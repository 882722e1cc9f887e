"""Evidence export: one MP4 of a camera's recorded span, stitched from every recorder.

The coverage journal says which source covered which part of ``[start, end)``;
:func:`rmfproxy.archive.stitch.plan` turns that into spans per source, widened by
:data:`FETCH_MARGIN` (the journal over-claims by up to about a second, and a takeover
needs the keyframe before its instant). Each source's spans are read with an ONVIF
replay (:class:`~rmfproxy.archive.replay_client.ReplayClient`, all sources at once),
:func:`~rmfproxy.archive.stitch.stitch` makes one frame sequence of them, and
:func:`mux_mp4` writes it to MP4 with PyAV **without transcoding**: the access units go
in as they were recorded (Annex B; FFmpeg's MP4 muxer rewrites them with length
prefixes and builds the ``avcC``/``hvcC`` box from the Annex B parameter sets given as
extradata). Presentation and decoding times are the capture times relative to the
first frame, in a 1/90000 time base (the recorders' streams carry no B-frames we could
reorder: decoding order is capture order). Only the first keyframe is decoded, to learn
the picture size the sample entry needs.

The file starts at the keyframe at or before ``start`` (up to one GOP early: a decoder
needs it) and ends before ``end``. A real gap (no recorder has footage) stays a gap:
the timestamps jump over it. A keyframe that starts a piece from another recorder gets
that recorder's parameter sets in front when it lacks them, so a standby encoded
differently still decodes after the seam.

Everything is held in memory until muxed: about the span's bitrate times its length
(``archive.export_max_seconds`` bounds it).

PyAV is imported where it is used, in the worker thread that muxes, not with this
module: a proxy that never exports never loads it (about 20 MB of RSS).
"""

from __future__ import annotations

import asyncio
import fractions
import io
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import structlog

from rmfproxy.archive.coverage import Interval
from rmfproxy.archive.fetch import (
    FETCH_MARGIN,
    ClientFactory,
    JournalReader,
    RecorderSource,
    nal_format,
    read_window,
    recorder_sources,
    replay_client,
)
from rmfproxy.archive.fetch import parameter_sets as source_parameter_sets
from rmfproxy.archive.replay_client import Codec
from rmfproxy.archive.stitch import ArchiveFrame, StitchedFrame, plan
from rmfproxy.rtp.nal import NalFormat, to_annexb

log = structlog.get_logger(__name__)

TIME_BASE = fractions.Fraction(1, 90000)
"""The MP4 track's time base (the RTP video clock)."""


class ExportError(Exception):
    """An export that cannot be made; the message says why (no credentials in it)."""


class ExportTooLong(ExportError):
    """The span is longer than ``archive.export_max_seconds``."""


class NoFootage(ExportError):
    """No recorder has (or returned) any footage of the span."""


@dataclass(frozen=True)
class ExportResult:
    """What went into one export."""

    camera: str
    start: float
    end: float
    codec: Codec
    frames: int
    size: int
    """Size of the MP4 in bytes."""
    seams: int
    gaps: list[Interval]
    """Parts of the window without footage (the timestamps jump over them)."""
    per_source: dict[str, int]
    """Frames taken from each source."""
    first_time: float
    """Capture time of the first frame (the keyframe at or before ``start``)."""
    last_time: float
    errors: dict[str, str] = field(default_factory=dict)
    """Sources whose replay failed (their footage, if any, was not used past the failure)."""
    data: bytes | None = field(default=None, repr=False)
    """The MP4 when no destination was given."""


async def export_recording(
    camera: str,
    start: float,
    end: float,
    *,
    journal: JournalReader,
    sources: Sequence[RecorderSource],
    max_seconds: float,
    dest: str | Path | IO[bytes] | None = None,
    margin: float = FETCH_MARGIN,
    client: ClientFactory = replay_client,
) -> ExportResult:
    """Export ``camera`` over ``[start, end)`` to ``dest`` (a path or a binary file);
    without ``dest`` the MP4 is returned in :attr:`ExportResult.data`.

    :class:`ExportTooLong` beyond ``max_seconds``, :class:`NoFootage` when the journal
    has nothing in the span or no recorder returned a frame; ``ValueError`` for
    ``end <= start``.
    """
    if not end > start:
        raise ValueError("end must be later than start")
    if end - start > max_seconds:
        raise ExportTooLong(
            f"the span is {end - start:.0f} s; at most {max_seconds:.0f} s can be exported "
            "(archive.export_max_seconds)"
        )
    began = time.monotonic()
    journaled = await journal.intervals(camera, start, end)
    intervals = {s.name: journaled.get(s.name, []) for s in sources}
    if all(span.source is None for span in plan(start, end, intervals)):
        raise NoFootage(f"no recorder covered camera {camera!r} in this span (coverage journal)")
    window = await read_window(
        camera,
        start,
        end,
        journal=journal,
        sources=sources,
        client=client,
        margin=margin,
        journaled=journaled,
    )
    got, stitched = window.got, window.stitched
    errors = {n: r.error for n, r in got.items() if r.error}
    if not stitched.frames:
        why = "; ".join(f"{n}: {e}" for n, e in errors.items()) or "no frames in the span"
        raise NoFootage(f"no recorder returned footage of camera {camera!r} ({why})")
    codecs = {r.codec for r in got.values() if r.codec is not None and r.frames}
    if len(codecs) != 1:
        raise ExportError(f"the recorders replay different codecs ({sorted(codecs)})")
    codec = codecs.pop()
    params = {n: source_parameter_sets(codec, r.frames) or r.sdp_params for n, r in got.items()}
    buffer = io.BytesIO() if dest is None else None
    target: str | Path | IO[bytes]
    if buffer is not None:
        target = buffer
    else:
        assert dest is not None
        target = dest
    size = await asyncio.to_thread(mux_mp4, stitched.frames, codec, target, params)
    result = ExportResult(
        camera,
        start,
        end,
        codec,
        len(stitched.frames),
        size,
        stitched.seams,
        stitched.gaps,
        stitched.per_source,
        stitched.frames[0].capture_time,
        stitched.frames[-1].capture_time,
        errors,
        buffer.getvalue() if buffer is not None else None,
    )
    for before, f in itertools.pairwise(stitched.frames):
        if f.seam or f.discontinuity:
            log.info(
                "archive.export_seam" if f.seam else "archive.export_gap",
                camera=camera,
                source=f.source,
                previous=before.source,
                at=datetime.fromtimestamp(f.capture_time, UTC).isoformat(timespec="milliseconds"),
                after=round(f.capture_time - before.capture_time, 3),
            )
    log.info(
        "archive.exported",
        camera=camera,
        seconds=round(end - start, 3),
        frames=result.frames,
        size=size,
        seams=result.seams,
        gaps=len(result.gaps),
        sources=result.per_source,
        failed=sorted(errors),
        took=round(time.monotonic() - began, 3),
    )
    return result


def _has_parameter_sets(fmt: NalFormat, frame: ArchiveFrame) -> bool:
    types = {fmt.nal_type(n) for n in frame.nals}
    return all(t in types for t in fmt.param_types)


def _picture_size(codec: Codec, first: bytes) -> tuple[int, int]:
    """Width and height of the picture the first keyframe (Annex B, parameter sets in
    front) decodes to: the MP4 sample entry needs them."""
    import av  # here, not at the top: see the module's docstring

    ctx = av.CodecContext.create("h264" if codec == "h264" else "hevc", "r")
    try:
        for packet in (av.Packet(first), None):
            for frame in ctx.decode(packet):
                return frame.width, frame.height
    except av.error.FFmpegError as exc:
        raise ExportError(f"the first keyframe does not decode ({exc})") from None
    raise ExportError("the first keyframe does not decode to a picture")


def mux_mp4(
    frames: Sequence[StitchedFrame],
    codec: Codec,
    dest: str | Path | IO[bytes],
    parameter_sets: dict[str, list[bytes]],
) -> int:
    """Write ``frames`` (a stitched sequence starting on a keyframe) to MP4; the file's
    size in bytes. ``parameter_sets`` per source go in front of a piece's first keyframe
    that lacks them (and the first piece's are the track's extradata)."""
    import av  # here, not at the top: see the module's docstring

    if not frames:
        raise ValueError("nothing to mux")
    fmt = nal_format(codec)
    frames = undecodable_leading_dropped(fmt, frames)
    first = frames[0]
    params = parameter_sets.get(first.source) or source_parameter_sets(codec, [first.frame])
    if not params:
        raise ExportError(f"no parameter sets from {first.source} (neither in-band nor in SDP)")
    t0 = first.capture_time
    units = [_units(fmt, f, parameter_sets, i == 0) for i, f in enumerate(frames)]
    width, height = _picture_size(codec, units[0])
    target = str(dest) if isinstance(dest, Path) else dest
    out = av.open(target, "w", format="mp4")
    try:
        stream = out.add_stream("h264" if codec == "h264" else "hevc")
        ctx = stream.codec_context
        ctx.width, ctx.height = width, height
        ctx.extradata = to_annexb(params)
        stream.time_base = TIME_BASE
        out.metadata["creation_time"] = datetime.fromtimestamp(t0, UTC).isoformat()
        pts = [round((f.capture_time - t0) * 90000) for f in frames]
        for i in range(1, len(pts)):
            pts[i] = max(pts[i], pts[i - 1] + 1)  # rounding must never make two equal
        steps = sorted(b - a for a, b in itertools.pairwise(pts)) or [3600]
        typical = steps[len(steps) // 2]
        for i, (f, data) in enumerate(zip(frames, units, strict=True)):
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = pts[i]
            # the last frame before a gap lasts one frame, not the gap
            nxt = pts[i + 1] - pts[i] if i + 1 < len(pts) else typical
            packet.duration = typical if f.end else min(nxt, 4 * typical)
            packet.time_base = TIME_BASE
            packet.is_keyframe = f.frame.keyframe
            out.mux(packet)
    finally:
        out.close()
    if isinstance(dest, str | Path):
        return Path(dest).stat().st_size
    return dest.tell()


def undecodable_leading_dropped(
    fmt: NalFormat, frames: Sequence[StitchedFrame]
) -> list[StitchedFrame]:
    """``frames`` without the leading pictures that cannot be decoded where a piece starts.

    A piece (the first frame, a seam, the frame after a gap) starts at a keyframe; after
    an H.265 CRA the RASL pictures that follow it in decoding order refer to pictures
    before it, which this file does not have (ITU-T H.265 §8.1.3): they are dropped, as a
    decoder starting there would drop them. H.264 has none (IDR only).
    """
    if not fmt.leading_skip_types:
        return list(frames)
    out: list[StitchedFrame] = []
    skipping = False
    for i, f in enumerate(frames):
        if i == 0 or f.seam or f.discontinuity:
            skipping = True  # just after a piece's keyframe
            out.append(f)
            continue
        if skipping:
            types = {fmt.nal_type(n) for n in f.frame.nals}
            slices = types & fmt.vcl_types
            if slices and slices <= fmt.leading_skip_types:
                continue
            skipping = False
        out.append(f)
    return out


def _units(fmt: NalFormat, f: StitchedFrame, params: dict[str, list[bytes]], first: bool) -> bytes:
    """One frame as Annex B, with its source's parameter sets in front of the keyframe
    that starts a piece when it does not carry them."""
    nals = list(f.frame.nals)
    starts_piece = first or f.seam or f.discontinuity
    if starts_piece and f.frame.keyframe and not _has_parameter_sets(fmt, f.frame):
        nals[:0] = params.get(f.source, [])
    return to_annexb(nals)


__all__ = [
    "FETCH_MARGIN",
    "ExportError",
    "ExportResult",
    "ExportTooLong",
    "NoFootage",
    "RecorderSource",
    "export_recording",
    "mux_mp4",
    "recorder_sources",
    "undecodable_leading_dropped",
]
