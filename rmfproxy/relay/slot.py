"""One configured source of a feed and what the feed knows of it (no I/O).

The slot holds the source's session objects (:class:`RtspSource`, main stream and
sub-stream) for the runner and for inspection; the feed core only reads their counters
and flags through the slot, never calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rmfproxy.relay.health import Heartbeat
from rmfproxy.relay.merge import MergeState
from rmfproxy.relay.standby import Mode, Standby, State
from rmfproxy.rtp.nal import KeyframeTracker
from rmfproxy.serve.gop import GopBuffer
from rmfproxy.upstream.loss import LossReason
from rmfproxy.upstream.source import RtspSource

SOURCE_GOP_BYTES = 8 << 20
SOURCE_GOP_SECONDS = 20.0
"""Bounds of each source's current-GOP buffer."""


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
    gop: GopBuffer = field(
        default_factory=lambda: GopBuffer(
            SOURCE_GOP_BYTES, SOURCE_GOP_SECONDS, first_unit_only=True
        )
    )
    """This source's current GOP (active or standby): its keyframe unit, parameter sets
    included, kept; its size and age tracked."""
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
    lost_reasons: list[LossReason] = field(default_factory=list)
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

    @property
    def autoplay(self) -> bool:
        """Its sessions PLAY once set up (a warm standby's are left in READY)."""
        return self.source is not None and self.source.autoplay

    @autoplay.setter
    def autoplay(self, on: bool) -> None:
        if self.source is not None:
            self.source.autoplay = on

    @property
    def pause_ignored(self) -> bool:
        """Its recorder answered PAUSE but the media went on."""
        return self.source is not None and self.source.pause_ignored

    def learn_path(self) -> None:
        """Tell the heartbeat what the session knows of its path (round trip, transport)."""
        if self.source is not None:
            self.heartbeat.set_path(rtt=self.source.stats.rtt, tcp=self.source.transport == "tcp")
