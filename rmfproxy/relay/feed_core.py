"""A feed's decisions without I/O: one camera, all its sources, one continuous stream.

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

Theory of operation (as aioquic's connection): :class:`FeedCore` never reads a clock
and never awaits. The runner (:class:`rmfproxy.relay.feed.Feed`) hands it the sources'
events and packets with ``now``, asks :meth:`FeedCore.deadline` when it next needs to
be called without a packet, calls :meth:`FeedCore.on_timer` then, and executes the
standby controls it queues in :attr:`FeedCore.controls` (PLAY, PAUSE, connect,
TEARDOWN), reporting their outcomes back through the ``on_*`` methods.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

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
from rmfproxy.relay.merge import Merger
from rmfproxy.relay.policy import Decision, Reason, SwitchPolicy
from rmfproxy.relay.rewriter import Rewriter
from rmfproxy.relay.slot import SourceSlot
from rmfproxy.relay.standby import Action, Mode, Standby, State
from rmfproxy.relay.switch_record import SwitchCause, SwitchRecord
from rmfproxy.relay.timeline import Timeline
from rmfproxy.rtp import h264, h265, rtcp
from rmfproxy.rtp.nal import KeyframeTracker
from rmfproxy.rtp.packet import payload_span
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.close_reason import CloseReason
from rmfproxy.serve.fanout import Fanout
from rmfproxy.serve.stream import MediaSink, TrackStart
from rmfproxy.upstream.loss import LossReason

log = structlog.get_logger(__name__)

SR_INTERVAL = 2.0
"""Seconds between RTCP sender reports per track."""
TICK = 0.02
"""Shortest wait between health checks."""
MAX_WAIT = 0.25
"""Longest wait between health checks (hold-down and outage timing resolution)."""
METER_INTERVAL = 1.0
"""Seconds between bitrate measurements (and path updates of the heartbeats)."""
EARLY = 0.002
"""A timer may fire this much before its deadline (uvloop counts milliseconds): what is
due that soon is done then, so a deadline never stays in the past."""
OUTPUT_STALL = 2.0
"""Seconds without outbound video, while the active source is healthy, before the feed
restarts the stream on that source's next keyframe (a safety net: health must reflect
what clients get, not only what arrives)."""

_SEQ_TS = struct.Struct(">HI")
_STARTING = State.STARTING
"""Bound once: reading an enum member off its class costs ~0.2 µs, per packet here."""

Control = tuple[int, Action]
"""A standby control for the runner: (source index, what to do with its session)."""


@dataclass(frozen=True)
class FeedTuning:
    """A camera's switching settings (the config's camera fields), given to the feed."""

    stall_floor: float = 0.15
    """Shortest freeze budget of a source (``stall_timeout``)."""
    stall_ceiling: float = 2.0
    """Longest freeze budget a learned path allowance may reach (``stall_timeout_max``)."""
    stall_overrides: tuple[float | None, ...] = ()
    """Per source, a fixed freeze budget (``sources[].stall_timeout``) or None."""
    failback_hold: float = 10.0
    hitless: bool = True
    outage_limit: float = 60.0


DEFAULT_TUNING = FeedTuning()


class FeedCore:
    """One camera's switching state, outbound stream and clients, driven with ``now``."""

    def __init__(
        self,
        camera: str,
        count: int,
        tuning: FeedTuning = DEFAULT_TUNING,
        *,
        standby: Sequence[Standby] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.camera = camera
        self.hitless = tuning.hitless
        self.outage_limit = tuning.outage_limit
        stall_floor, stall_ceiling = tuning.stall_floor, tuning.stall_ceiling
        self.wall = wall
        """Wall-clock time (switch records, sender reports' NTP time): labels, never timing."""
        self.no_source_since: float | None = None
        """Since when no source has been healthy (None while one is)."""
        self.merger: Merger | None = None
        overrides = list(tuning.stall_overrides) or [None] * count
        self.slots = [
            SourceSlot(i, "", heartbeat=Heartbeat(stall_floor, stall_ceiling, override=o))
            for i, o in enumerate(overrides)
        ]
        self._on_demand = False
        """Some source is warm or cold (standby controls are needed)."""
        for slot, sb in zip(self.slots, standby or [], strict=False):
            slot.standby = sb
            slot.sub_heartbeat = Heartbeat(stall_floor, stall_ceiling)
            self._on_demand |= sb.on_demand
        self.controls: list[Control] = []
        """Standby controls for the runner to start (it empties the list)."""
        self._controlling: set[int] = set()
        """Slots with a control under way (one at a time per slot)."""
        self._running: set[int] = set()
        """Slots whose main session loop runs (started on demand)."""
        self.policy = SwitchPolicy(count, tuning.failback_hold)
        self.active: int | None = None
        self.pending: Decision | None = None
        self._detection = 0.0
        self._cause: LossReason | SwitchCause = SwitchCause.START
        self._last_out = 0.0
        self._stall_restart_at = 0.0
        """When the output-stall safety net last restarted the stream (once per period)."""
        self.switches: list[SwitchRecord] = []
        """The last 50 switches."""
        self.switch_count = 0
        """Every switch since the start."""
        self.on_switch: Callable[[SwitchRecord], None] | None = None
        """Called after every switch."""
        self._sdp: SessionDescription | None = None
        self._formats: list[TrackFormat] = []
        self._rewriters: list[Rewriter] = []
        self.video_track: int | None = None
        self.fanout: Fanout | None = None
        self.dropped_packets = 0
        self.incompatible_sources = 0
        self.no_source_seconds = 0.0
        """Total time spent without any healthy source (once a source has been relayed)."""
        self.output_stalls = 0
        """Times the outbound video stopped while the active source was healthy."""
        self._checked = 0.0
        """When the health was last checked (on_timer)."""
        self._meter_at = 0.0
        self._meter_bytes = [0] * count
        self._sr_at = SR_INTERVAL

    def on_start(self, now: float) -> None:
        """The runner starts: timers count from ``now``."""
        self._checked = self._meter_at = now
        self._sr_at = now + SR_INTERVAL

    # the outbound stream -------------------------------------------------------------

    def sdp(self) -> SessionDescription | None:
        """The client SDP, fixed by the first source that connected (None before that)."""
        return self._sdp

    def ssrc(self, track: int) -> int:
        """The proxy-owned outbound SSRC of ``track``."""
        return self._timeline(track).ssrc

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

    def delivering(self, now: float) -> bool:
        """True while clients get video: something went out within the stall bound."""
        return bool(self._last_out) and now - self._last_out <= OUTPUT_STALL

    def source_name(self, index: int | None) -> str | None:
        """Name of a source index."""
        return None if index is None else self.slots[index].name

    def switch_to(self, source: str | None, now: float) -> None:
        """Pin a source by name (None: back to automatic); the switch is made at a keyframe."""
        if source is None:
            self.policy.set_manual(None)
        else:
            index = next((s.index for s in self.slots if s.name == source), None)
            if index is None:
                raise ValueError(f"camera {self.camera} has no source {source!r}")
            self.policy.set_manual(index)
        self._evaluate(now)

    # timers --------------------------------------------------------------------------

    def deadline(self) -> float:
        """When :meth:`on_timer` is next needed if no packet or event comes: the next health
        check (just after the first freeze deadline of a connected source, within [TICK,
        MAX_WAIT] of the last check: losses are evaluated when reported, hold-down and
        outage times at that resolution), the next bitrate measurement, and the next
        sender report while clients get packets."""
        base = self._checked
        due = [
            d
            for s in self.slots
            if s.connected and (d := s.heartbeat.deadline()) is not None and d > base
        ]
        wait = min(due) - base + 0.002 if due else MAX_WAIT
        at = min(base + min(MAX_WAIT, max(TICK, wait)), self._meter_at + METER_INTERVAL)
        if self.clients and any(src.packets for _, src in self._timelines()):
            at = min(at, self._sr_at)
        return at

    def on_timer(self, now: float) -> None:
        """Check the health (switch, outage, output stall), measure, send sender reports."""
        if self.active is not None and not any(s.healthy(now) for s in self.slots):
            self.no_source_seconds += now - self._checked
        self._checked = now
        if now >= self._meter_at + METER_INTERVAL - EARLY:
            self._measure(now)
        self._evaluate(now)
        self._check_output(now)
        if now >= self._sr_at - EARLY:
            self._sr_at = now + SR_INTERVAL
            self._send_reports(now)

    def _measure(self, now: float) -> None:
        elapsed = now - self._meter_at
        for slot, before in zip(self.slots, self._meter_bytes, strict=True):
            slot.bitrate = (slot.bytes - before) * 8 / elapsed
            slot.learn_path()
        self._meter_at, self._meter_bytes = now, [s.bytes for s in self.slots]

    def _timeline(self, track: int) -> Timeline:
        """A track's outbound numbering: its rewriter's, or the merger's for the video."""
        if self.merger is not None and track == self.video_track:
            return self.merger.timeline
        return self._rewriters[track].timeline

    def _timelines(self) -> Iterator[tuple[int, Timeline]]:
        """Each track's outbound numbering."""
        for track in range(len(self._rewriters)):
            yield track, self._timeline(track)

    def _send_reports(self, now: float) -> None:
        """Our own sender reports, from the outbound numbering (continuous across switches)."""
        if self.fanout is None or not self.fanout.sinks:
            return
        wall = self.wall()
        for track, src in self._timelines():
            if src.packets == 0:
                continue
            sr = rtcp.build_sender_report(
                src.ssrc,
                rtcp.ntp_from_unix(wall),
                src.rtp_time_at(now),
                src.packets,
                src.octets,
                cname=f"rmfproxy-{self.camera}",
            )
            self.fanout.send_rtcp(track, sr)

    # source events -------------------------------------------------------------------

    def on_connected(self, index: int, sdp: SessionDescription, now: float) -> None:
        """A source's session plays (its SDP)."""
        slot = self.slots[index]
        formats = track_formats(sdp)
        if self._sdp is None:
            self._adopt(sdp, formats)
        slot.connected = True
        slot.compatible = len(formats) == len(self._formats) and all(
            same_format(a, b) for a, b in zip(self._formats, formats, strict=True)
        )
        slot.described = True  # from now on a warm/cold standby of another codec is unavailable
        # Payload types to rewrite to the announced ones (0xFF: already the same).
        slot.pt_rewrite = [
            a.payload_type if a.payload_type != b.payload_type else 0xFF
            for a, b in zip(self._formats, formats, strict=False)
        ]
        slot.heartbeat.reset()
        slot.learn_path()  # the round trip of its requests so far: known before its media
        slot.gop.clear()
        slot.last_video_ts = None
        slot.last_seq = [None] * len(formats)
        slot.trackers = [_tracker(f) for f in formats] if slot.compatible else []
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
            slot.standby.on_playing(now)
            if self.pending is not None and self.pending.target == index and self.merger:
                self.merger.anchor(index)  # reset_source forgot the anchor of the promotion

    def on_ready(self, index: int, sdp: SessionDescription, now: float) -> None:
        """A warm source's session is set up without media (READY)."""
        self.on_connected(index, sdp, now)
        self.slots[index].standby.on_ready()
        self._reconcile(now)

    def on_lost(self, index: int, reason: LossReason, now: float) -> None:
        """A source's session ended (the source reconnects on its own)."""
        slot = self.slots[index]
        slot.connected = False
        if slot.standby.on_demand:
            slot.standby.on_lost(now)
        slot.gop.clear()
        if self.merger is not None:
            self.merger.source_gone(index)
        slot.lost_reasons = [*slot.lost_reasons[-9:], reason]
        log.warning("feed.source_lost", camera=self.camera, source=slot.name, reason=reason)
        self._evaluate(now)

    def on_substream_connected(self, index: int) -> None:
        """A warm source's sub-stream plays (its RTP is the source's liveness)."""
        slot = self.slots[index]
        slot.sub_heartbeat.reset()
        slot.sub_last_ts = None
        slot.standby.on_substream(True)
        log.info("feed.substream_connected", camera=self.camera, source=slot.name)

    def on_substream_packet(self, index: int, is_rtcp: bool, data: bytearray, now: float) -> None:
        """A packet of a warm source's sub-stream: counted as liveness, never relayed."""
        if is_rtcp or len(data) < 12:
            return
        slot = self.slots[index]
        ts = int.from_bytes(data[4:8], "big")
        if ts != slot.sub_last_ts:
            slot.sub_last_ts = ts
            slot.sub_heartbeat.on_frame(now)
        else:
            slot.sub_heartbeat.on_packet(now)

    def on_substream_lost(self, index: int, reason: LossReason) -> None:
        """A warm source's sub-stream ended."""
        slot = self.slots[index]
        slot.standby.on_substream(False)
        log.warning("feed.substream_lost", camera=self.camera, source=slot.name, reason=reason)

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

    # health and switching ------------------------------------------------------------

    def _check_output(self, now: float) -> None:
        """Restart the stream on the active source if nothing has gone out for a while although
        it is healthy (a glitch no other rule caught must never freeze a camera)."""
        merger, active = self.merger, self.active
        if merger is None or active is None or self.pending is not None:
            return
        if not self.slots[active].healthy(now) or merger.anchoring(active):
            return
        since = max(self._last_out, self._stall_restart_at)
        if self._last_out and now - since > OUTPUT_STALL:
            self.output_stalls += 1
            log.error(
                "feed.output_stalled",
                camera=self.camera,
                source=self.slots[active].name,
                silent_s=round(now - self._last_out, 2),
            )
            merger.anchor(active)
            # One restart per stall period. _last_out stays: delivering() (readiness, the
            # API, the metric) says no until a picture really goes out again.
            self._stall_restart_at = now

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
            elif decision.reason is Reason.INITIAL and (out := m.start_held(decision.target, now)):
                self._switch(now)  # the first keyframe came before the choice: start on it
                self._merged(out, now)
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

    def _why(self, decision: Decision, old: int | None) -> LossReason | SwitchCause:
        if decision.reason is Reason.MANUAL:
            return SwitchCause.OPERATOR
        if decision.reason is Reason.FAILBACK:
            return SwitchCause.HOLD_DOWN
        if decision.reason is Reason.INITIAL or old is None:
            return SwitchCause.START
        slot = self.slots[old]
        if not slot.connected:
            return slot.lost_reasons[-1] if slot.lost_reasons else SwitchCause.LOST
        if not slot.compatible:
            return SwitchCause.INCOMPATIBLE
        return SwitchCause.RTP_OVERDUE

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
            self.fanout.close_all(CloseReason.NO_SOURCE)

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
            self.wall(),
            self.source_name(old),
            self.slots[decision.target].name,
            decision.reason,
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
        if self.on_switch is not None:
            self.on_switch(rec)
        if self._on_demand:
            self._reconcile(now)  # the old source stands by again

    # standby -------------------------------------------------------------------------

    def _reconcile(self, now: float) -> None:
        """Promote the warm/cold source the feed needs, demote the ones it does not."""
        pending = self.pending.target if self.pending is not None else None
        for slot in self.slots:
            sb = slot.standby
            if sb.mode is Mode.HOT or slot.index in self._controlling:
                continue
            wanted = slot.index in (self.active, pending)
            if sb.mode is Mode.WARM and not sb.substream:
                slot.autoplay = wanted  # what a session set up on its own after a loss does
                if sb.state is State.PAUSED and slot.pause_ignored and sb.pause_supported:
                    self._pause_unsupported(slot, "media-after-pause")
                    self._control(slot, Action.PARK)
                    continue
            action = sb.plan(wanted, now, slot.index in self._running)
            if action is Action.PROMOTE:
                sb.on_promote(now)
                log.info(
                    "feed.standby_promoted",
                    camera=self.camera,
                    source=slot.name,
                    mode=sb.mode.value,
                )
                self._control(slot, Action.PROMOTE)
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
                self._control(slot, Action.DEMOTE)

    def _control(self, slot: SourceSlot, action: Action) -> None:
        self._controlling.add(slot.index)
        self.controls.append((slot.index, action))

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

    # outcomes of the runner's controls -------------------------------------------------

    def on_control_done(self, index: int) -> None:
        """The control of slot ``index`` ended (done, failed or cancelled)."""
        self._controlling.discard(index)

    def on_run_state(self, index: int, running: bool) -> None:
        """The main session loop of slot ``index`` started or ended."""
        if running:
            self._running.add(index)
        else:
            self._running.discard(index)

    def on_substream_stopped(self, index: int) -> None:
        """A promotion stopped the sub-stream: its end is not a loss, the main one starts."""
        self.slots[index].standby.state = State.STARTING

    def on_pause_result(self, index: int, result: str) -> bool:
        """What a demotion's PAUSE got (paused, refused, lost); True: park the source."""
        slot = self.slots[index]
        if result == "paused":
            slot.standby.on_ready()
        elif result == "refused":
            self._pause_unsupported(slot, "pause-refused")
            return True
        else:
            slot.standby.on_demoted()
        return False

    def on_main_stopped(self, index: int) -> None:
        """A demotion ended the main session (TEARDOWN)."""
        slot = self.slots[index]
        slot.connected = False
        slot.standby.on_demoted()

    def on_parking(self, index: int) -> None:
        """The runner parks the source (TEARDOWN, then a session without PLAY)."""
        slot = self.slots[index]
        slot.standby.on_demoted()
        slot.connected = False
        self._quiet(slot)

    # packets -------------------------------------------------------------------------

    def on_packet(self, index: int, track: int, is_rtcp: bool, data: bytearray, now: float) -> None:
        """One packet of a source: counted, watched, and relayed if its source is active."""
        if is_rtcp:
            return  # the proxy sends its own sender reports (see _send_reports)
        slot = self.slots[index]
        if slot.standby.state is _STARTING:
            slot.standby.on_media()
        slot.packets += 1
        size = len(data)
        slot.bytes += size
        if track >= len(self._rewriters) or size < 12 or data[0] >> 6 != 2:
            self.dropped_packets += 1
            slot.packets_dropped += 1
            return
        seq, ts = _SEQ_TS.unpack_from(data, 2)
        last_seq = slot.last_seq
        if track < len(last_seq):
            prev = last_seq[track]
            if prev is None:
                last_seq[track] = seq
            else:
                delta = (seq - prev) & 0xFFFF
                if delta < 0x8000:  # not a late (reordered) packet
                    if 1 < delta < 3000:
                        slot.packets_lost += delta - 1
                    last_seq[track] = seq
        rewrite = slot.pt_rewrite
        if track < len(rewrite) and (pt := rewrite[track]) != 0xFF:
            data[1] = (data[1] & 0x80) | pt
        key = False
        if track == self.video_track:
            if ts != slot.last_video_ts:
                slot.last_video_ts = ts
                slot.frames += 1
                slot.heartbeat.on_frame(now)
            else:
                slot.heartbeat.on_packet(now)
            tracker = slot.trackers[track] if slot.trackers else None
            if tracker is not None:
                if data[0] & 0x3F:  # CSRCs, an extension or padding: walk the header
                    try:
                        start, end = payload_span(data)
                    except ValueError:
                        self.dropped_packets += 1
                        slot.packets_dropped += 1
                        return
                else:  # the fixed header alone (version and length checked above): no call
                    start, end = 12, size
                merger = self.merger
                if merger is not None:
                    # The merger finds keyframes per AU (slice types) and feeds the source's
                    # GOP buffer through _on_source_au.
                    out = merger.push(index, data, start, end, now)
                    if out or merger.events or self.pending is not None:
                        self._merged(out, now)
                    return
                key = tracker.push(memoryview(data)[start:end], bool(data[1] & 0x80))
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

    def _merged(self, out: Sequence[tuple[bytearray, bool]], now: float) -> None:
        """After a packet went into the merger (and released ``out``): log its state changes,
        make the pending switch if the merger shows it is due, send what it released.
        Called only when there is something of that to do (most packets end no AU)."""
        merger = self.merger
        assert merger is not None and self.fanout is not None
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
        self.fanout.send_many(track, out, now)
        self._last_out = now

    def _on_source_au(self, index: int, au: AccessUnit, now: float) -> None:
        """Keep each source's current GOP (thumbnails, inspection), AU by AU: a keyframe is
        an AU with a random-access slice, not merely one that carries parameter sets."""
        gop = self.slots[index].gop
        track = self.video_track
        assert track is not None
        gop.push_unit(track, au.packets, au.keyframe, now)

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


def _tracker(f: TrackFormat) -> KeyframeTracker | None:
    if f.media == "video" and f.encoding == "H264":
        return h264.keyframe_tracker()
    if f.media == "video" and f.encoding in ("H265", "HEVC"):
        return h265.keyframe_tracker()
    return None
