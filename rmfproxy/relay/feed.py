"""A feed: one camera with all its sources, serving one continuous stream to clients.

The feed implements ``MediaStream`` for the RTSP server. It owns one
:class:`~rmfproxy.upstream.source.RtspSource` per configured source, one
:class:`Rewriter` per client-facing track, and a :class:`Fanout`. The
client-facing SDP is fixed by the first source that connects and then stays
valid for the life of the feed; a source whose tracks do not match it is not
relayed (logged, counted), because clients were told otherwise at DESCRIBE.

This foundation relays the highest-priority source that is connected; the
failover work (heartbeats, GOP-aligned switching) builds on this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from rmfproxy.relay.rewriter import Rewriter
from rmfproxy.rtp import h264, h265, rtcp
from rmfproxy.rtp.nal import KeyframeTracker
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.fanout import Fanout
from rmfproxy.serve.stream import MediaSink, TrackStart
from rmfproxy.upstream.source import RtspSource

log = structlog.get_logger(__name__)

SR_INTERVAL = 2.0
"""Seconds between RTCP sender reports per track (RFC 3550 §6.2 allows 5 s minimum
for large groups; FFmpeg and VLC sync faster with more frequent reports)."""


@dataclass(frozen=True, slots=True)
class TrackFormat:
    """What a client-facing track carries, compared when a source connects."""

    media: str
    payload_type: int
    encoding: str
    clock_rate: int


def track_formats(sdp: SessionDescription) -> list[TrackFormat]:
    """The comparable format of every media section (first payload type of each)."""
    out = []
    for m in sdp.media:
        pt = int(m.formats[0]) if m.formats else -1
        rm = m.rtpmap(pt) if pt >= 0 else None
        enc = rm.encoding.upper() if rm else str(pt)
        clock = rm.clock_rate if rm else (8000 if pt in (0, 8) else 90000)
        out.append(TrackFormat(m.media, pt, enc, clock))
    return out


def client_sdp(upstream: SessionDescription, camera: str) -> SessionDescription:
    """The SDP clients get: the upstream's media formats, the proxy's controls (trackID=i)."""
    lines = [
        "v=0",
        f"o=- {random.getrandbits(31)} 1 IN IP4 0.0.0.0",
        f"s={camera}",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=tool:rmfproxy",
        "a=control:*",
        "a=range:npt=now-",
    ]
    for i, m in enumerate(upstream.media):
        lines.append(f"m={m.media} 0 {m.proto} {' '.join(str(f) for f in m.formats)}")
        for name, value in m.attributes:
            if name in ("control", "range", "recvonly", "sendonly", "sendrecv", "inactive"):
                continue
            lines.append(f"a={name}:{value}" if value is not None else f"a={name}")
        lines.append("a=recvonly")
        lines.append(f"a=control:trackID={i}")
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


@dataclass
class SourceSlot:
    """One configured source of the feed and what is known of it."""

    index: int
    name: str
    source: RtspSource | None = None
    connected: bool = False
    compatible: bool = False
    last_packet: float = 0.0
    packets: int = 0
    bytes: int = 0
    lost_reasons: list[str] = field(default_factory=list)


class _Listener:
    """Routes one source's callbacks to the feed with the source's index."""

    __slots__ = ("feed", "index")

    def __init__(self, feed: Feed, index: int) -> None:
        self.feed = feed
        self.index = index

    def on_connected(self, sdp: SessionDescription) -> None:
        self.feed._on_connected(self.index, sdp)

    def on_packet(self, track: int, rtcp: bool, data: bytearray) -> None:
        self.feed._on_packet(self.index, track, rtcp, data)

    def on_lost(self, reason: str) -> None:
        self.feed._on_lost(self.index, reason)


class Feed:
    """One camera: its sources, its outbound stream and its clients."""

    def __init__(
        self,
        camera: str,
        make_source: Callable[[int, _Listener], tuple[str, RtspSource]],
        count: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.camera = camera
        self.clock = clock
        self.slots = [SourceSlot(i, "") for i in range(count)]
        for i in range(count):
            name, src = make_source(i, _Listener(self, i))
            self.slots[i].name = name
            self.slots[i].source = src
        self.active: int | None = None
        self._sdp: SessionDescription | None = None
        self._formats: list[TrackFormat] = []
        self._rewriters: list[Rewriter] = []
        self._keyframe: list[KeyframeTracker | None] = []
        self.video_track: int | None = None
        self.fanout: Fanout | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sr_task: asyncio.Task[None] | None = None
        self.dropped_packets = 0

    # MediaStream -------------------------------------------------------------

    def sdp(self) -> SessionDescription | None:
        """The client SDP, fixed by the first source that connected (None before that)."""
        return self._sdp

    def ssrc(self, track: int) -> int:
        """The proxy-owned outbound SSRC of ``track``."""
        return self._rewriters[track].ssrc

    def start_points(self) -> dict[int, TrackStart]:
        """Where a client attached now starts."""
        return self.fanout.start_points() if self.fanout else {}

    def attach(self, sink: MediaSink) -> None:
        """Add a client."""
        if self.fanout is not None:
            self.fanout.attach(sink)

    def detach(self, sink: MediaSink) -> None:
        """Remove a client."""
        if self.fanout is not None:
            self.fanout.detach(sink)

    @property
    def clients(self) -> int:
        """Number of attached clients."""
        return len(self.fanout.sinks) if self.fanout else 0

    # lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start pulling every source."""
        for slot in self.slots:
            assert slot.source is not None
            self._tasks.append(
                asyncio.create_task(slot.source.run(), name=f"source-{self.camera}-{slot.name}")
            )
        self._sr_task = asyncio.create_task(self._send_reports(), name=f"sr-{self.camera}")

    async def stop(self) -> None:
        """Stop every source and drop every client."""
        tasks = [*self._tasks, *([self._sr_task] if self._sr_task else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        if self.fanout is not None:
            self.fanout.close_all("feed-stopped")

    # source events -----------------------------------------------------------

    def _on_connected(self, index: int, sdp: SessionDescription) -> None:
        slot = self.slots[index]
        formats = track_formats(sdp)
        if self._sdp is None:
            self._adopt(sdp, formats)
        slot.connected = True
        slot.compatible = formats == self._formats
        if not slot.compatible:
            log.error(
                "feed.source_incompatible",
                camera=self.camera,
                source=slot.name,
                expected=[f.encoding for f in self._formats],
                got=[f.encoding for f in formats],
            )
            return
        log.info("feed.source_connected", camera=self.camera, source=slot.name)
        self._choose_active()

    def _on_lost(self, index: int, reason: str) -> None:
        slot = self.slots[index]
        slot.connected = False
        slot.lost_reasons = [*slot.lost_reasons[-9:], reason]
        log.warning("feed.source_lost", camera=self.camera, source=slot.name, reason=reason)
        if self.active == index:
            self.active = None
            self._choose_active()

    def _choose_active(self) -> None:
        best = next((s.index for s in self.slots if s.connected and s.compatible), None)
        # Only a higher-priority source, or none active, takes over (at once here;
        # the failover work adds keyframe alignment and hold-down).
        if best is not None and (self.active is None or best < self.active):
            self.active = best
            for rw in self._rewriters:
                rw.reanchor()
            log.info("feed.active", camera=self.camera, source=self.slots[best].name)

    def _adopt(self, sdp: SessionDescription, formats: list[TrackFormat]) -> None:
        self._sdp = client_sdp(sdp, self.camera)
        self._formats = formats
        self._rewriters = [Rewriter(f.clock_rate) for f in formats]
        self._keyframe = []
        for i, f in enumerate(formats):
            if f.media == "video" and f.encoding == "H264":
                self._keyframe.append(h264.keyframe_tracker())
            elif f.media == "video" and f.encoding in ("H265", "HEVC"):
                self._keyframe.append(h265.keyframe_tracker())
            else:
                self._keyframe.append(None)
            if f.media == "video" and self.video_track is None:
                self.video_track = i
        self.fanout = Fanout(len(formats), self.video_track)

    def _on_packet(self, index: int, track: int, is_rtcp: bool, data: bytearray) -> None:
        slot = self.slots[index]
        now = self.clock()
        slot.last_packet = now
        slot.packets += 1
        slot.bytes += len(data)
        if is_rtcp or index != self.active:
            return  # standby buffering is the failover work; our own SRs go out below
        if track >= len(self._rewriters) or len(data) < 12 or data[0] >> 6 != 2:
            self.dropped_packets += 1
            return
        self._rewriters[track].rewrite(data, now)
        tracker = self._keyframe[track]
        key = False
        if tracker is not None:
            offset = 12 + 4 * (data[0] & 0x0F)
            if data[0] & 0x10:
                if len(data) < offset + 4:
                    self.dropped_packets += 1
                    return
                offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
            if offset >= len(data):
                self.dropped_packets += 1
                return
            key = tracker.push(memoryview(data)[offset:], bool(data[1] & 0x80))
        assert self.fanout is not None
        self.fanout.send_rtp(track, data, key)

    async def _send_reports(self) -> None:
        """Our own sender reports, from the outbound numbering (continuous across switches)."""
        while True:
            await asyncio.sleep(SR_INTERVAL)
            if self.fanout is None or not self.fanout.sinks:
                continue
            now_mono = self.clock()
            wall = time.time()
            for track, rw in enumerate(self._rewriters):
                if rw.packets == 0:
                    continue
                sr = rtcp.build_sender_report(
                    rw.ssrc,
                    rtcp.ntp_from_unix(wall),
                    rw.rtp_time_at(now_mono),
                    rw.packets,
                    rw.octets,
                    cname=f"rmfproxy-{self.camera}",
                )
                self.fanout.send_rtcp(track, sr)
