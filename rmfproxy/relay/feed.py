"""A feed: one camera with all its sources, serving one continuous stream to clients.

Every source is pulled all the time (hot standby). The feed relays one of
them, the *active* source, and follows :class:`SwitchPolicy`: when the active
source fails (TCP close, RTSP error, failed keepalive, RTCP BYE, or RTP
overdue by its heartbeat budget), the feed switches to the best healthy
standby. The switch happens on the new source's first keyframe access unit
(parameter sets and IDR/IRAP), never on a delta frame, so the client decodes
the very next frame it gets; the rewriters re-anchor so the client's SSRC
stays, its sequence numbers go on +1 and its timestamps keep rising by the
wall-clock time that passed. A failback to a higher-priority source waits for
the hold-down time and then switches the same way, at a keyframe.

The client-facing SDP is fixed by the first source that connects; a source
whose tracks differ from it is never switched to (logged, counted).

Standby modes (:mod:`rmfproxy.relay.standby`): a ``warm`` or ``cold`` source is pulled
only while it is the active source or the target of a pending switch. The feed passes
the policy which of them are available on demand, promotes the one it chooses (PLAY,
or connect) and switches to it as to any source, at its first keyframe (or at once if
the merger finds it carries the stream's pictures); every other one is demoted again
(PAUSE, sub-stream, or TEARDOWN) once the feed no longer relays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from rmfproxy.relay.access_unit import AccessUnit
from rmfproxy.relay.formats import (
    TrackFormat,
    client_sdp,
    same_format,
    sdp_parameter_sets,
    track_formats,
)
from rmfproxy.relay.health import Heartbeat
from rmfproxy.relay.merge import Merger, MergeState
from rmfproxy.relay.policy import Decision, Reason, SwitchPolicy
from rmfproxy.relay.rewriter import Rewriter
from rmfproxy.relay.standby import Action, Mode, Standby, State
from rmfproxy.rtp import h264, h265, rtcp
from rmfproxy.rtp.nal import KeyframeTracker
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.fanout import Fanout
from rmfproxy.serve.gop import GopBuffer
from rmfproxy.serve.stream import MediaSink, TrackStart
from rmfproxy.upstream.source import RtspSource

log = structlog.get_logger(__name__)

SR_INTERVAL = 2.0
"""Seconds between RTCP sender reports per track."""
TICK = 0.02
"""Shortest wait between health checks."""
MAX_WAIT = 0.25
"""Longest wait between health checks (hold-down and outage timing resolution)."""
SOURCE_GOP_BYTES = 8 << 20
SOURCE_GOP_SECONDS = 20.0
"""Bounds of each source's current-GOP buffer."""
OUTPUT_STALL = 2.0
"""Seconds without outbound video, while the active source is healthy, before the feed
restarts the stream on that source's next keyframe (a safety net: health must reflect
what clients get, not only what arrives)."""


@dataclass
class SwitchRecord:
    """One switch, as operators and benchmarks see it."""

    at: float
    """Wall-clock time the new source's first packet went out."""
    from_source: str | None
    to_source: str
    reason: str
    """failover, failback, manual or initial (the metric's ``direction``)."""
    cause: str
    """What made it: the old source's loss reason (tcp-closed, rtcp-bye, timeout, ...),
    ``rtp-overdue`` for a silent freeze, ``hold-down`` for a failback, ``operator``."""
    detection_s: float
    """From the old source's last packet to the decision (0 for a planned switch)."""
    gap_s: float
    """From the last packet relayed before the switch to the first one after it."""


@dataclass
class SourceSlot:
    """One configured source of the feed and what is known of it."""

    index: int
    name: str
    source: RtspSource | None = None
    connected: bool = False
    compatible: bool = False
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    trackers: list[KeyframeTracker | None] = field(default_factory=list)
    last_video_ts: int | None = None
    pt_rewrite: list[int] = field(default_factory=list)
    gop: GopBuffer = field(default_factory=lambda: GopBuffer(SOURCE_GOP_BYTES, SOURCE_GOP_SECONDS))
    """This source's current GOP (active or standby), parameter sets included."""
    packets: int = 0
    bytes: int = 0
    frames: int = 0
    """Video frames (RTP timestamps) received."""
    packets_lost: int = 0
    """RTP sequence numbers never seen (per track, gaps below 3000 counted)."""
    packets_dropped: int = 0
    """Malformed packets counted and dropped."""
    bitrate: float = 0.0
    """Bits per second received over the last second."""
    last_seq: list[int | None] = field(default_factory=list)
    lost_reasons: list[str] = field(default_factory=list)
    merge_state: MergeState = MergeState.UNKNOWN
    """Whether it carries the same pictures as the outbound stream (observed)."""
    standby: Standby = field(default_factory=Standby)
    """Its standby mode and connection state (hot unless configured)."""
    sub: RtspSource | None = None
    """Warm with ``standby_url``: the sub-stream pulled while standing by."""
    sub_heartbeat: Heartbeat = field(default_factory=Heartbeat)
    sub_last_ts: int | None = None
    described: bool = False
    """A session told its SDP (compatibility is known)."""

    @property
    def wan_received(self) -> int:
        """Bytes received from the recorder, main stream and sub-stream, signalling too."""
        subs = self.sub.stats.wan_received if self.sub else 0
        return (self.source.stats.wan_received if self.source else 0) + subs

    @property
    def wan_sent(self) -> int:
        """Bytes sent to the recorder (requests, keepalives, receiver reports)."""
        subs = self.sub.stats.wan_sent if self.sub else 0
        return (self.source.stats.wan_sent if self.source else 0) + subs

    @property
    def standby_state(self) -> State:
        """What its connection does now (a hot source flows while connected)."""
        if self.standby.mode is Mode.HOT:
            return State.FLOWING if self.connected else State.DISCONNECTED
        return self.standby.state

    @property
    def flowing(self) -> bool:
        """Its main stream is pulled (always for a hot source): its merge state is current
        (a paused standby's is stale until its media flows again)."""
        return not self.standby.on_demand or self.standby.state is State.FLOWING

    def available(self, now: float) -> bool:
        """A standby that can be promoted now (not one of another codec)."""
        sb = self.standby
        if sb.mode is Mode.HOT or (self.described and not self.compatible):
            return False
        alive = sb.substream and sb.state is State.SUBSTREAM and self._sub_alive(now)
        return sb.available(now, alive)

    def _sub_alive(self, now: float) -> bool:
        hb = self.sub_heartbeat
        return hb.last_packet is not None and not hb.overdue(now)

    def healthy(self, now: float) -> bool:
        """Connected, compatible, and delivering RTP within its heartbeat budget."""
        hb = self.heartbeat
        return (
            self.connected
            and self.compatible
            and hb.last_packet is not None
            and not hb.overdue(now)
        )


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

    def on_ready(self, sdp: SessionDescription) -> None:
        self.feed._on_ready(self.index, sdp)


class _SubListener:
    """A warm source's sub-stream: liveness only (its media is counted, never relayed)."""

    __slots__ = ("feed", "index")

    def __init__(self, feed: Feed, index: int) -> None:
        self.feed = feed
        self.index = index

    def on_connected(self, sdp: SessionDescription) -> None:
        slot = self.feed.slots[self.index]
        slot.sub_heartbeat.reset()
        slot.sub_last_ts = None
        slot.standby.on_substream(True)
        log.info("feed.substream_connected", camera=self.feed.camera, source=slot.name)

    def on_packet(self, track: int, rtcp: bool, data: bytearray) -> None:
        if rtcp or len(data) < 12:
            return
        slot = self.feed.slots[self.index]
        ts = int.from_bytes(data[4:8], "big")
        if ts != slot.sub_last_ts:
            slot.sub_last_ts = ts
            slot.sub_heartbeat.on_frame(self.feed.clock())
        else:
            slot.sub_heartbeat.on_packet(self.feed.clock())

    def on_lost(self, reason: str) -> None:
        slot = self.feed.slots[self.index]
        slot.standby.on_substream(False)
        log.warning("feed.substream_lost", camera=self.feed.camera, source=slot.name, reason=reason)


SourceFactory = Callable[[int, _Listener], tuple[str, RtspSource]]


@dataclass(frozen=True)
class StandbySpec:
    """How one source stands by (see :mod:`rmfproxy.relay.standby`)."""

    mode: Mode = Mode.HOT
    make_substream: Callable[[_SubListener], RtspSource] | None = None
    """Warm only: builds the source of the sub-stream (``standby_url``)."""


class Feed:
    """One camera: its sources, its switching state, its outbound stream and its clients."""

    def __init__(
        self,
        camera: str,
        make_source: SourceFactory,
        count: int,
        *,
        stall_floor: float = 0.15,
        stall_ceiling: float = 2.0,
        stall_overrides: list[float | None] | None = None,
        failback_hold: float = 10.0,
        hitless: bool = True,
        outage_limit: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        standby: Sequence[StandbySpec] | None = None,
    ) -> None:
        self.camera = camera
        self.hitless = hitless
        self.outage_limit = outage_limit
        self.no_source_since: float | None = None
        """Since when no source has been healthy (None while one is)."""
        self.merger: Merger | None = None
        self.clock = clock
        overrides = stall_overrides or [None] * count
        self.slots = [
            SourceSlot(i, "", heartbeat=Heartbeat(stall_floor, stall_ceiling, override=o))
            for i, o in enumerate(overrides)
        ]
        for i in range(count):
            name, src = make_source(i, _Listener(self, i))
            self.slots[i].name = name
            self.slots[i].source = src
        self._on_demand = False
        """Some source is warm or cold (the standby runner is needed)."""
        for i, spec in enumerate(standby or []):
            slot = self.slots[i]
            sub = spec.make_substream if spec.mode is Mode.WARM else None
            slot.standby = Standby(spec.mode, substream=sub is not None)
            slot.sub_heartbeat = Heartbeat(stall_floor, stall_ceiling)
            if sub is not None:
                slot.sub = sub(_SubListener(self, i))
            if spec.mode is not Mode.HOT:
                self._on_demand = True
                assert slot.source is not None
                slot.source.autoplay = False  # warm: set up, no PLAY; cold: not started
        self._runs: dict[tuple[int, bool], asyncio.Task[None]] = {}
        """Source loops started on demand: (slot, sub-stream?) -> task."""
        self._controls: dict[int, asyncio.Task[None]] = {}
        """The promotion or demotion under way per slot (one at a time)."""
        self.policy = SwitchPolicy(count, failback_hold)
        self.active: int | None = None
        self.pending: Decision | None = None
        self._detection = 0.0
        self._last_out = 0.0
        self.switches: list[SwitchRecord] = []
        """The last 50 switches."""
        self.switch_count = 0
        """Every switch since the start."""
        self._sdp: SessionDescription | None = None
        self._formats: list[TrackFormat] = []
        self._rewriters: list[Rewriter] = []
        self.video_track: int | None = None
        self.fanout: Fanout | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped_packets = 0
        self.incompatible_sources = 0
        self.no_source_seconds = 0.0
        """Total time spent without any healthy source (once a source has been relayed)."""
        self.on_switch: list[Callable[[Feed, SwitchRecord], None]] = []
        """Called after every switch (metrics)."""
        self._cause = ""
        self.output_stalls = 0
        """Times the outbound video stopped while the active source was healthy."""

    # MediaStream -------------------------------------------------------------

    def sdp(self) -> SessionDescription | None:
        """The client SDP, fixed by the first source that connected (None before that)."""
        return self._sdp

    def ssrc(self, track: int) -> int:
        """The proxy-owned outbound SSRC of ``track``."""
        if self.merger is not None and track == self.video_track:
            return self.merger.ssrc
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

    def video_encoding(self) -> str | None:
        """Encoding name of the announced video track (H264, H265), None without video."""
        if self.video_track is None:
            return None
        return self._formats[self.video_track].encoding

    @property
    def clients(self) -> int:
        """Number of attached clients."""
        return len(self.fanout.sinks) if self.fanout else 0

    # control -----------------------------------------------------------------

    def switch_to(self, source: str | None) -> None:
        """Pin a source by name (None: back to automatic); the switch is made at a keyframe."""
        if source is None:
            self.policy.set_manual(None)
        else:
            index = next((s.index for s in self.slots if s.name == source), None)
            if index is None:
                raise ValueError(f"camera {self.camera} has no source {source!r}")
            self.policy.set_manual(index)
        self._evaluate(self.clock())

    def source_name(self, index: int | None) -> str | None:
        """Name of a source index."""
        return None if index is None else self.slots[index].name

    # lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start pulling every source, the health checks and the sender reports."""
        for slot in self.slots:
            assert slot.source is not None
            sb = slot.standby
            if sb.mode is not Mode.HOT:
                if sb.substream:
                    self._start_run(slot, sub=True)
                elif sb.mode is Mode.WARM:
                    self._start_run(slot, sub=False)
                continue  # cold: nothing until the feed needs it
            self._tasks.append(
                asyncio.create_task(slot.source.run(), name=f"source-{self.camera}-{slot.name}")
            )
        self._tasks.append(asyncio.create_task(self._watch(), name=f"health-{self.camera}"))
        self._tasks.append(asyncio.create_task(self._send_reports(), name=f"sr-{self.camera}"))

    async def stop(self) -> None:
        """Stop every source and drop every client."""
        extra = [*self._controls.values(), *self._runs.values()]
        for t in [*self._tasks, *extra]:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if extra:
            await asyncio.wait(extra)
        self._tasks.clear()
        self._controls.clear()
        self._runs.clear()
        if self.fanout is not None:
            self.fanout.close_all("feed-stopped")

    # source events -----------------------------------------------------------

    def _on_connected(self, index: int, sdp: SessionDescription) -> None:
        slot = self.slots[index]
        formats = track_formats(sdp)
        if self._sdp is None:
            self._adopt(sdp, formats)
        slot.connected = True
        slot.compatible = len(formats) == len(self._formats) and all(
            same_format(a, b) for a, b in zip(self._formats, formats, strict=True)
        )
        # Payload types to rewrite to the announced ones (0xFF: already the same).
        slot.pt_rewrite = [
            a.payload_type if a.payload_type != b.payload_type else 0xFF
            for a, b in zip(self._formats, formats, strict=False)
        ]
        slot.heartbeat.reset()
        slot.gop.clear()
        slot.last_video_ts = None
        slot.last_seq = [None] * len(formats)
        slot.trackers = [self._tracker(f) for f in formats] if slot.compatible else []
        if self.merger is not None and self.video_track is not None:
            params = sdp_parameter_sets(sdp, self.video_track, self.merger.fmt)
            self.merger.reset_source(index, params if slot.compatible else None)
            self._drain_merge_events()
        if not slot.compatible:
            self.incompatible_sources += 1
            log.error(
                "feed.source_incompatible",
                camera=self.camera,
                source=slot.name,
                expected=[f.encoding for f in self._formats],
                got=[f.encoding for f in formats],
            )
            return
        log.info("feed.source_connected", camera=self.camera, source=slot.name)
        if slot.standby.on_demand:
            slot.standby.on_playing(self.clock())
            if self.pending is not None and self.pending.target == index and self.merger:
                self.merger.anchor(index)  # reset_source forgot the anchor of the promotion

    def _on_ready(self, index: int, sdp: SessionDescription) -> None:
        """A warm source's session is set up without media (READY)."""
        self._on_connected(index, sdp)
        slot = self.slots[index]
        slot.standby.on_ready()
        self._reconcile(self.clock())

    def _on_lost(self, index: int, reason: str) -> None:
        slot = self.slots[index]
        slot.connected = False
        if slot.standby.on_demand:
            slot.standby.on_lost(self.clock())
        slot.gop.clear()
        if self.merger is not None:
            self.merger.source_gone(index)
        slot.lost_reasons = [*slot.lost_reasons[-9:], reason]
        log.warning("feed.source_lost", camera=self.camera, source=slot.name, reason=reason)
        self._evaluate(self.clock())

    @staticmethod
    def _tracker(f: TrackFormat) -> KeyframeTracker | None:
        if f.media == "video" and f.encoding == "H264":
            return h264.keyframe_tracker()
        if f.media == "video" and f.encoding in ("H265", "HEVC"):
            return h265.keyframe_tracker()
        return None

    def _adopt(self, sdp: SessionDescription, formats: list[TrackFormat]) -> None:
        self._sdp = client_sdp(sdp, self.camera)
        self._formats = formats
        self._rewriters = [Rewriter(f.clock_rate) for f in formats]
        self.video_track = next((i for i, f in enumerate(formats) if f.media == "video"), None)
        self.fanout = Fanout(len(formats), self.video_track)
        if self.video_track is not None:
            # H.264/H.265 video always goes through the merger, which works on whole access
            # units: with hitless off it only never matches sources (every switch restarts at
            # a keyframe with its parameter sets).
            f = formats[self.video_track]
            nal_formats = {"H264": h264.FORMAT, "H265": h265.FORMAT, "HEVC": h265.FORMAT}
            nal_format = nal_formats.get(f.encoding)
            if nal_format is not None:
                self.merger = Merger(nal_format, f.clock_rate, merge=self.hitless)
                self.merger.on_au = self._on_source_au

    # health and switching ----------------------------------------------------

    async def _watch(self) -> None:
        last = self.clock()
        meter_at, meter_bytes = last, [0] * len(self.slots)
        while True:
            await asyncio.sleep(self._next_check(self.clock()))
            now = self.clock()
            if self.active is not None and not any(s.healthy(now) for s in self.slots):
                self.no_source_seconds += now - last
            last = now
            if now - meter_at >= 1.0:
                for slot, before in zip(self.slots, meter_bytes, strict=True):
                    slot.bitrate = (slot.bytes - before) * 8 / (now - meter_at)
                meter_at, meter_bytes = now, [s.bytes for s in self.slots]
                for slot in self.slots:
                    if slot.source is not None:
                        slot.heartbeat.set_path(
                            rtt=slot.source.stats.rtt, tcp=slot.source.transport == "tcp"
                        )
            self._evaluate(now)
            self._check_output(now)

    def _check_output(self, now: float) -> None:
        """Restart the stream on the active source if nothing has gone out for a while although
        it is healthy (a glitch no other rule caught must never freeze a camera)."""
        merger, active = self.merger, self.active
        if merger is None or active is None or self.pending is not None:
            return
        if not self.slots[active].healthy(now) or merger.anchoring(active):
            return
        if self._last_out and now - self._last_out > OUTPUT_STALL:
            self.output_stalls += 1
            log.error(
                "feed.output_stalled",
                camera=self.camera,
                source=self.slots[active].name,
                silent_s=round(now - self._last_out, 2),
            )
            merger.anchor(active)
            self._last_out = now  # one restart per stall period

    def delivering(self, now: float) -> bool:
        """True while clients get video: something went out within the stall bound."""
        return bool(self._last_out) and now - self._last_out <= OUTPUT_STALL

    def _next_check(self, now: float) -> float:
        """Seconds until the health can change without a packet or a loss event: the first
        healthy source's freeze deadline (just after it), within [TICK, MAX_WAIT]. Losses
        are evaluated when they are reported; waking only when needed keeps an idle camera
        at a few wake-ups per second instead of fifty."""
        deadlines = [
            d
            for s in self.slots
            if s.connected and (d := s.heartbeat.deadline()) is not None and d > now
        ]
        wait = min(deadlines) - now + 0.002 if deadlines else MAX_WAIT
        return min(MAX_WAIT, max(TICK, wait))

    def _evaluate(self, now: float) -> None:
        healthy = [s.healthy(now) for s in self.slots]
        self._check_outage(now, any(healthy))
        available = [s.available(now) for s in self.slots] if self._on_demand else None
        decision = self.policy.decide(now, healthy, self.active, available)
        if decision is None:
            target = self.pending.target if self.pending is not None else None
            if target is not None and not (healthy[target] or (available and available[target])):
                self._drop_pending()  # the chosen standby failed too; decide again next tick
            elif (
                self.pending is not None
                and self.active is not None
                and healthy[self.active]
                and self.pending.reason is Reason.FAILOVER
            ):
                self._drop_pending()  # the active source recovered before the switch
            if self._on_demand:
                self._reconcile(now)
            return
        if self.pending is not None and self.pending.target == decision.target:
            if self._on_demand:
                self._reconcile(now)
            return
        self._drop_pending()
        self.pending = decision
        old = self.active
        last = self.slots[old].heartbeat.last_packet if old is not None else None
        self._detection = now - last if (decision.reason is Reason.FAILOVER and last) else 0.0
        self._cause = self._why(decision, old)
        log.debug(  # the switch itself is logged once, as feed.switched
            "feed.switch_planned",
            camera=self.camera,
            reason=decision.reason.value,
            source=self.slots[decision.target].name,
            from_source=self.source_name(old),
            cause=self._cause,
            detection_ms=round(self._detection * 1000, 1),
        )
        if self.merger is not None:
            m = self.merger
            flowing = self.slots[decision.target].flowing
            if m.merge and m.aligned(decision.target) and self.active is not None and flowing:
                self._switch(now)  # same pictures on the same timeline: nothing to wait for
            else:
                self.merger.anchor(decision.target)
        if self._on_demand:
            self._reconcile(now)

    def _drop_pending(self) -> None:
        """Forget the planned switch, and the merger's restart at its target's keyframe with
        it: otherwise the stream would still restart on that source while the feed stays on
        the active one (seen behind a central proxy: a site proxy whose recorder came back
        at once restarted on the standby's other encoding, then back)."""
        pending, self.pending = self.pending, None
        if pending is not None and self.merger is not None and pending.target != self.active:
            self.merger.cancel_anchor(pending.target)

    def _why(self, decision: Decision, old: int | None) -> str:
        if decision.reason is Reason.MANUAL:
            return "operator"
        if decision.reason is Reason.FAILBACK:
            return "hold-down"
        if decision.reason is Reason.INITIAL or old is None:
            return "start"
        slot = self.slots[old]
        if not slot.connected:
            return slot.lost_reasons[-1] if slot.lost_reasons else "lost"
        if not slot.compatible:
            return "incompatible"
        return "rtp-overdue"

    def _check_outage(self, now: float, any_healthy: bool) -> None:
        """Client sessions wait through an outage, up to ``outage_limit`` seconds."""
        if any_healthy or self.active is None:
            self.no_source_since = None
            return
        if self.no_source_since is None:
            self.no_source_since = now
            log.error("feed.no_healthy_source", camera=self.camera)
        elif now - self.no_source_since > self.outage_limit and self.fanout and self.fanout.sinks:
            log.error("feed.outage_limit", camera=self.camera, clients=len(self.fanout.sinks))
            self.fanout.close_all("no-source")

    def _switch(self, now: float) -> None:
        """Make the pending switch (we are at the new source's keyframe start)."""
        assert self.pending is not None
        decision, self.pending = self.pending, None
        old = self.active
        self.active = decision.target
        if self.merger is not None:
            self.merger.active = decision.target
        for rw in self._rewriters:
            rw.reanchor()
        gap = now - self._last_out if self._last_out else 0.0
        rec = SwitchRecord(
            time.time(),
            self.source_name(old),
            self.slots[decision.target].name,
            decision.reason.value,
            self._cause,
            self._detection,
            gap,
        )
        self.switches = [*self.switches[-49:], rec]
        self.switch_count += 1
        log.info(
            "feed.switched",
            camera=self.camera,
            reason=rec.reason,
            cause=rec.cause,
            source=rec.to_source,
            from_source=rec.from_source,
            detection_ms=round(rec.detection_s * 1000, 1),
            gap_ms=round(gap * 1000, 1),
        )
        for callback in self.on_switch:
            callback(self, rec)
        if self._on_demand:
            self._reconcile(now)  # the old source stands by again

    # standby -----------------------------------------------------------------

    def _reconcile(self, now: float) -> None:
        """Promote the warm/cold source the feed needs, demote the ones it does not."""
        pending = self.pending.target if self.pending is not None else None
        for slot in self.slots:
            sb = slot.standby
            if sb.mode is Mode.HOT or slot.index in self._controls:
                continue
            src = slot.source
            assert src is not None
            wanted = slot.index in (self.active, pending)
            if sb.mode is Mode.WARM and not sb.substream:
                src.autoplay = wanted  # what a session set up on its own after a loss does
                if sb.state is State.PAUSED and src.pause_ignored and sb.pause_supported:
                    self._pause_unsupported(slot, "media-after-pause")
                    self._control(slot, self._park(slot))
                    continue
            running = (slot.index, False) in self._runs
            action = sb.plan(wanted, now, running)
            if action is Action.PROMOTE:
                sb.on_promote(now)
                log.info(
                    "feed.standby_promoted",
                    camera=self.camera,
                    source=slot.name,
                    mode=sb.mode.value,
                )
                self._control(slot, self._promote(slot))
            elif action is Action.DEMOTE:
                log.info(
                    "feed.standby_demoted",
                    camera=self.camera,
                    source=slot.name,
                    mode=sb.mode.value,
                    failed=sb.failed_until > now,
                )
                if slot.index == pending and slot.index != self.active:
                    self._drop_pending()  # its promotion failed: decide again
                self._quiet(slot)
                self._control(slot, self._demote(slot))

    def _control(self, slot: SourceSlot, work: Any) -> None:
        task = asyncio.create_task(work, name=f"standby-{self.camera}-{slot.name}")
        self._controls[slot.index] = task

        def done(t: asyncio.Task[None], index: int = slot.index) -> None:
            if self._controls.get(index) is t:
                del self._controls[index]
            if not t.cancelled() and t.exception() is not None:
                log.error(
                    "feed.standby_error",
                    camera=self.camera,
                    source=self.slots[index].name,
                    error=repr(t.exception())[:200],
                )

        task.add_done_callback(done)

    def _start_run(self, slot: SourceSlot, *, sub: bool) -> None:
        src = slot.sub if sub else slot.source
        assert src is not None
        key = (slot.index, sub)
        if key in self._runs:
            return
        task = asyncio.create_task(src.run(), name=f"source-{self.camera}-{slot.name}")
        self._runs[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._runs.get(key) is t:
                del self._runs[key]

        task.add_done_callback(done)

    async def _stop_run(self, slot: SourceSlot, *, sub: bool) -> None:
        src = slot.sub if sub else slot.source
        assert src is not None
        await src.aclose()  # TEARDOWN (at most 0.5 s), then the loop ends
        task = self._runs.pop((slot.index, sub), None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    async def _promote(self, slot: SourceSlot) -> None:
        sb, src = slot.standby, slot.source
        assert src is not None
        src.autoplay = True
        if sb.mode is Mode.WARM and not sb.substream:
            if not await src.resume():
                log.info("feed.standby_resume_failed", camera=self.camera, source=slot.name)
            return
        if sb.substream:
            await self._stop_run(slot, sub=True)
            sb.state = State.STARTING  # the sub-stream's end must not count as a loss
        self._start_run(slot, sub=False)

    async def _demote(self, slot: SourceSlot) -> None:
        sb, src = slot.standby, slot.source
        assert src is not None
        src.autoplay = False
        if sb.mode is Mode.WARM and not sb.substream:
            if not sb.pause_supported:
                await self._park(slot)
                return
            result = await src.pause()
            if result == "paused":
                sb.on_ready()
            elif result == "refused":
                self._pause_unsupported(slot, "pause-refused")
                await self._park(slot)
            else:
                sb.on_demoted()
            return
        await self._stop_run(slot, sub=False)
        slot.connected = False
        sb.on_demoted()
        if sb.substream:
            self._start_run(slot, sub=True)

    async def _park(self, slot: SourceSlot) -> None:
        assert slot.source is not None
        slot.standby.on_demoted()
        slot.connected = False
        self._quiet(slot)
        await slot.source.park()  # the new session reports on_ready

    def _pause_unsupported(self, slot: SourceSlot, why: str) -> None:
        slot.standby.pause_supported = False
        log.warning(  # once per source: from now on it is parked (TEARDOWN + SETUP)
            "feed.pause_unsupported", camera=self.camera, source=slot.name, reason=why
        )

    def _quiet(self, slot: SourceSlot) -> None:
        """A source stops flowing on purpose: forget its arrivals and its place in the
        merged stream (it must locate itself again when promoted)."""
        slot.heartbeat.reset()
        slot.gop.clear()
        slot.last_video_ts = None
        slot.last_seq = [None] * len(slot.last_seq)
        if self.merger is not None and slot.index != self.active:
            sdp_params = self.merger.parameter_sets(slot.index)
            self.merger.reset_source(slot.index, sdp_params if slot.compatible else None)
            self._drain_merge_events()

    # packets -----------------------------------------------------------------

    def _on_packet(self, index: int, track: int, is_rtcp: bool, data: bytearray) -> None:
        if is_rtcp:
            return  # the proxy sends its own sender reports (see _send_reports)
        slot = self.slots[index]
        now = self.clock()
        if slot.standby.state is State.STARTING:
            slot.standby.on_media()
        slot.packets += 1
        slot.bytes += len(data)
        if track >= len(self._rewriters) or len(data) < 12 or data[0] >> 6 != 2:
            self.dropped_packets += 1
            slot.packets_dropped += 1
            return
        seq = (data[2] << 8) | data[3]
        if track < len(slot.last_seq):
            prev = slot.last_seq[track]
            if prev is not None:
                delta = (seq - prev) & 0xFFFF
                if 1 < delta < 3000:
                    slot.packets_lost += delta - 1
                if delta < 0x8000:  # not a late (reordered) packet
                    slot.last_seq[track] = seq
            else:
                slot.last_seq[track] = seq
        pt = slot.pt_rewrite[track] if track < len(slot.pt_rewrite) else 0xFF
        if pt != 0xFF:
            data[1] = (data[1] & 0x80) | pt
        video = track == self.video_track
        key = False
        if video:
            ts = int.from_bytes(data[4:8], "big")
            if ts != slot.last_video_ts:
                slot.last_video_ts = ts
                slot.frames += 1
                slot.heartbeat.on_frame(now)
            else:
                slot.heartbeat.on_packet(now)
            tracker = slot.trackers[track] if slot.trackers else None
            if tracker is not None:
                offset = 12 + 4 * (data[0] & 0x0F)
                end = len(data)
                if data[0] & 0x10:
                    if len(data) < offset + 4:
                        self.dropped_packets += 1
                        slot.packets_dropped += 1
                        return
                    offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
                if data[0] & 0x20:  # padding (RFC 3550 §5.1): its count is the last byte
                    end -= data[-1]
                if offset > end or (data[0] & 0x20 and data[-1] == 0):
                    self.dropped_packets += 1
                    slot.packets_dropped += 1
                    return
                if self.merger is not None:
                    # The merger finds keyframes per AU (slice types) and feeds the source's
                    # GOP buffer through _on_source_au.
                    self._merge(index, data, offset, end, now)
                    return
                key = tracker.push(memoryview(data)[offset:end], bool(data[1] & 0x80))
                slot.gop.push(track, data, key, now)
        else:
            if self.video_track is None:
                slot.heartbeat.on_frame(now)
                key = True
            slot.gop.push(track, data, key, now)
        if index != self.active:
            pending = self.pending
            if pending is None or pending.target != index or not (key or self.video_track is None):
                return  # standby: pulled and watched, not relayed
            self._switch(now)
        self._rewriters[track].rewrite(data, now)
        self._last_out = now
        assert self.fanout is not None
        self.fanout.send_rtp(track, data, key, now)

    def _merge(self, index: int, data: bytearray, start: int, end: int, now: float) -> None:
        merger = self.merger
        assert merger is not None and self.fanout is not None
        out = merger.push(index, data, start, end, now)
        if merger.events:
            self._drain_merge_events()
        pending = self.pending
        if (
            pending is not None
            and not merger.anchoring(pending.target)
            and (
                merger.last_sender == pending.target
                or (
                    merger.merge
                    and merger.aligned(pending.target)
                    and self.slots[pending.target].flowing
                )
            )
        ):
            self._switch(now)  # restarted on it, or it turned out to carry the same AUs
        if not out:
            return
        track = self.video_track
        assert track is not None
        for pkt, key in out:
            self.fanout.send_rtp(track, pkt, key, now)
        self._last_out = now

    def _on_source_au(self, index: int, au: AccessUnit) -> None:
        """Keep each source's current GOP (thumbnails, inspection), AU by AU: a keyframe is
        an AU with a random-access slice, not merely one that carries parameter sets."""
        gop = self.slots[index].gop
        track = self.video_track
        assert track is not None
        now = self.clock()
        for i, pkt in enumerate(au.packets):
            gop.push(track, pkt, au.keyframe and i == 0, now)

    def _drain_merge_events(self) -> None:
        """Log each change of a source's merge state once."""
        assert self.merger is not None
        events, self.merger.events = self.merger.events, []
        for ev in events:
            slot = self.slots[ev.index]
            if ev.state is slot.merge_state:
                continue
            slot.merge_state = ev.state
            log.info(
                "feed.merge_state",
                camera=self.camera,
                source=slot.name,
                state=ev.state.value,
                reason=ev.why,
            )

    async def _send_reports(self) -> None:
        """Our own sender reports, from the outbound numbering (continuous across switches)."""
        while True:
            await asyncio.sleep(SR_INTERVAL)
            if self.fanout is None or not self.fanout.sinks:
                continue
            now_mono = self.clock()
            wall = time.time()
            for track, rw in enumerate(self._rewriters):
                src: Rewriter | Merger = rw
                if self.merger is not None and track == self.video_track:
                    src = self.merger
                if src.packets == 0:
                    continue
                sr = rtcp.build_sender_report(
                    src.ssrc,
                    rtcp.ntp_from_unix(wall),
                    src.rtp_time_at(now_mono),
                    src.packets,
                    src.octets,
                    cname=f"rmfproxy-{self.camera}",
                )
                self.fanout.send_rtcp(track, sr)
