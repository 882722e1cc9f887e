"""Reading a camera's recorded window from its recorders: what the export and the stitched
playback share.

:func:`read_window` asks the coverage journal which source covered which part of the
window, turns that into ranges per source (:func:`~rmfproxy.archive.stitch.plan`,
widened by a margin: the journal over-claims by up to about a second, and a takeover
needs the keyframe before its instant), reads them with ONVIF replays (all sources at
once) and stitches them. What no frame covers then (a recorder failed, or the journal
over-claimed it) is asked of every source that has not been asked for it yet, journal
or not, and the window is stitched again. The frames are the ground truth; the journal
only decides what to ask for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from rmfproxy.archive.coverage import Interval, gaps, normalize
from rmfproxy.archive.replay_client import Codec, ReplayClient, ReplayError
from rmfproxy.archive.stitch import ArchiveFrame, Stitched, fetch_ranges, plan, stitch
from rmfproxy.config import Config
from rmfproxy.rtp import h264, h265
from rmfproxy.rtp.nal import NalFormat
from rmfproxy.tls import client_context
from rmfproxy.upstream.url import is_tls

log = structlog.get_logger(__name__)

FETCH_MARGIN = 2.0
"""Seconds each planned span is widened by when read from its recorder."""


class JournalReader(Protocol):
    """What reading a window needs of the coverage journal."""

    def intervals(
        self, camera: str, start: float, end: float
    ) -> Awaitable[dict[str, list[Interval]]]:
        """Per source (priority order), the intervals it covered within the window."""


@dataclass(frozen=True)
class RecorderSource:
    """Where one source of a camera replays from."""

    name: str
    url: str
    """The URL it replays from (no credentials in it)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca_file: Path | None = None
    """For an ``rtsps://`` URL: the CA bundle its certificate must lead to (None: the
    system store)."""
    tls_verify: bool = True
    """For an ``rtsps://`` URL: verify the recorder's certificate (the config's key)."""


def recorder_sources(config: Config, camera: str) -> list[RecorderSource]:
    """The sources of ``camera`` in priority order, with their credentials resolved.

    A recorder replays from the source's ``replay_url`` if the config gives one (NVRs
    often have their own playback URL), else from the URL it serves live on, with
    ``Require: onvif-replay``.
    """
    cam = config.cameras[camera]
    out = []
    for i, src in enumerate(cam.sources):
        secret = src.resolve_password()
        out.append(
            RecorderSource(
                cam.source_name(i),
                src.replay_url or src.url,
                src.username,
                secret.value if secret else None,
                src.tls_ca_file,
                src.tls_verify,
            )
        )
    return out


class ReplayReader(Protocol):
    """What reading needs of a replay (:class:`ReplayClient`, or a fake in tests)."""

    @property
    def codec(self) -> Codec | None:
        """The replayed video's codec, once known."""

    def frames(self, start: float, end: float) -> AsyncIterator[ArchiveFrame]:
        """The recorded frames from the clean point at or before ``start`` to ``end``."""

    def sdp_parameter_sets(self) -> list[bytes]:
        """Parameter sets announced in the replay's SDP."""


ClientFactory = Callable[[RecorderSource], ReplayReader]


def replay_client(src: RecorderSource) -> ReplayReader:
    """The default :data:`ClientFactory`: an ONVIF replay over RTSP."""
    tls = client_context(src.tls_ca_file, verify=src.tls_verify) if is_tls(src.url) else None
    return ReplayClient(
        src.url, username=src.username, password=src.password, name=src.name, tls=tls
    )


@dataclass
class SourceRead:
    """What one source's replays returned."""

    name: str
    frames: list[ArchiveFrame] = field(default_factory=list)
    error: str = ""
    codec: Codec | None = None
    sdp_params: list[bytes] = field(default_factory=list)


@dataclass
class Window:
    """A window read from the recorders."""

    got: dict[str, SourceRead]
    """Per source that was read (priority order), what it returned."""
    stitched: Stitched
    """The window stitched from it."""
    asked: dict[str, list[Interval]]
    """Per source, the ranges it was asked for."""

    def frames(self) -> dict[str, list[ArchiveFrame]]:
        """Per source (priority order), its frames."""
        return {n: r.frames for n, r in self.got.items()}

    def errors(self) -> dict[str, str]:
        """Sources whose replay failed, and why."""
        return {n: r.error for n, r in self.got.items() if r.error}


async def read_window(
    camera: str,
    start: float,
    end: float,
    *,
    journal: JournalReader,
    sources: Sequence[RecorderSource],
    client: ClientFactory = replay_client,
    margin: float = FETCH_MARGIN,
    also: dict[str, list[Interval]] | None = None,
    journaled: dict[str, list[Interval]] | None = None,
) -> Window:
    """Read ``[start, end)`` of ``camera`` from its recorders and stitch it (module
    docstring). ``also``: more ranges to read per source, whatever the journal says;
    ``journaled``: the journal's intervals for the window, if the caller has them."""
    if journaled is None:
        journaled = await journal.intervals(camera, start, end)
    intervals = {s.name: journaled.get(s.name, []) for s in sources}
    spans = plan(start, end, intervals)
    ranges = fetch_ranges(spans, start, end, margin)
    for name, ivs in (also or {}).items():
        ranges[name] = normalize([*ranges.get(name, []), *ivs])
    by_name = {s.name: s for s in sources}
    reads = await asyncio.gather(
        *(read_source(by_name[n], ivs, client) for n, ivs in ranges.items() if n in by_name)
    )
    got = _in_order(sources, {r.name: r for r in reads})
    stitched = stitch(start, end, {n: r.frames for n, r in got.items()})
    extra = _second_pass(stitched.gaps, ranges, got, sources, margin, start, end)
    if extra:
        more = await asyncio.gather(
            *(read_source(by_name[n], ivs, client) for n, ivs in extra.items())
        )
        for r in more:
            old = got.setdefault(r.name, SourceRead(r.name))
            old.frames = sorted([*old.frames, *r.frames], key=lambda f: f.capture_time)
            old.error = old.error or r.error
            old.codec = old.codec or r.codec
            old.sdp_params = old.sdp_params or r.sdp_params
            ranges[r.name] = normalize([*ranges.get(r.name, []), *extra[r.name]])
        got = _in_order(sources, got)
        stitched = stitch(start, end, {n: r.frames for n, r in got.items()})
    return Window(got, stitched, ranges)


def _in_order(
    sources: Sequence[RecorderSource], got: dict[str, SourceRead]
) -> dict[str, SourceRead]:
    return {s.name: got[s.name] for s in sources if s.name in got}


async def read_source(
    src: RecorderSource, ranges: list[Interval], client: ClientFactory
) -> SourceRead:
    """Every range of one source, one replay after the other; the frames read before a
    failure are kept (the stitcher takes the rest from another source)."""
    out = SourceRead(src.name)
    for a, b in ranges:
        replay = client(src)
        try:
            async for frame in replay.frames(a, b):
                out.frames.append(frame)
        except ReplayError as exc:
            out.error = str(exc)
            log.warning("archive.replay_source_failed", source=src.name, reason=out.error[:200])
            break
        finally:
            out.codec = out.codec or replay.codec
            out.sdp_params = out.sdp_params or replay.sdp_parameter_sets()
    return out


def _second_pass(
    holes: list[Interval],
    asked: dict[str, list[Interval]],
    got: dict[str, SourceRead],
    sources: Sequence[RecorderSource],
    margin: float,
    start: float,
    end: float,
) -> dict[str, list[Interval]]:
    """Per source that did not fail, the parts of ``holes`` (widened by ``margin``) it has
    not been asked for."""
    out: dict[str, list[Interval]] = {}
    wanted = [(max(start - margin, a - margin), min(end, b + margin)) for a, b in holes]
    for src in sources:
        read = got.get(src.name)
        if read is not None and read.error:
            continue
        todo: list[Interval] = []
        for a, b in wanted:
            todo += gaps([asked.get(src.name, [])], a, b)
        todo = normalize(todo)
        if todo:
            out[src.name] = todo
    return out


def nal_format(codec: Codec) -> NalFormat:
    """The NAL unit rules of ``codec``."""
    return h264.FORMAT if codec == "h264" else h265.FORMAT


def parameter_sets(codec: Codec, frames: Sequence[ArchiveFrame]) -> list[bytes]:
    """The parameter sets of the first keyframe of ``frames`` that carries them all."""
    fmt = nal_format(codec)
    for f in frames:
        if not f.keyframe:
            continue
        found = {fmt.nal_type(n): n for n in f.nals if fmt.nal_type(n) in fmt.param_types}
        if all(t in found for t in fmt.param_types):
            return [found[t] for t in fmt.param_types]
    return []
