"""What operators see of a feed: frozen values read from a :class:`Feed` in one place.

The admin API, the metrics and the thumbnails (``rmfproxy/ops/``) read these, never the
feed's slots, heartbeats, merger or policy: the feed's inside can change shape without
touching them, and a scrape or an API answer sees one consistent instant. Control goes
the other way through :meth:`Feed.switch_to`.

:func:`snapshot` and :func:`keyframe` are the only readers of a feed's attributes for
``ops/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmfproxy.relay.feed import Feed, SwitchRecord
from rmfproxy.relay.merge import MergeState
from rmfproxy.relay.standby import Mode
from rmfproxy.relay.standby import State as StandbyState
from rmfproxy.rtp import packet as rtp

__all__ = [
    "FeedSnapshot",
    "KeyframeSnapshot",
    "PendingSnapshot",
    "SourceSnapshot",
    "StandbySnapshot",
    "SwitchRecord",
    "keyframe",
    "snapshot",
]


@dataclass(frozen=True, slots=True)
class StandbySnapshot:
    """A source's standby mode and what its connection does now."""

    mode: Mode
    state: StandbyState
    substream: bool
    pause_supported: bool
    promotions: int


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """One configured source of a camera (times in seconds of the feed's clock)."""

    index: int
    """Its priority (0 first), the index of its ``sources:`` entry."""
    name: str
    connected: bool
    compatible: bool
    healthy: bool
    active: bool
    last_packet_age: float | None
    heartbeat_budget: float
    path_allowance: float
    path_stalls: int
    rtt: float | None
    frame_interval: float | None
    packets: int
    bytes: int
    frames: int
    packets_lost: int
    packets_dropped: int
    bitrate: float
    """Bits per second over the last second."""
    reconnects: int
    udp_rejected_packets: int
    gop_bytes: int
    gop_age: float | None
    loss_reasons: tuple[str, ...]
    """The last loss reasons of its session, oldest first."""
    merge_state: MergeState | None
    """None when the camera has no merger (no H.264/H.265 video)."""
    access_units: dict[str, int] | None
    """The merger's per-outcome counts (sent, copies, broken, late), or None."""
    standby: StandbySnapshot
    wan_received: int
    wan_sent: int


@dataclass(frozen=True, slots=True)
class PendingSnapshot:
    """A switch decided, waiting for the target's keyframe."""

    source: str
    direction: str


@dataclass(frozen=True, slots=True)
class FeedSnapshot:
    """One camera's relay state at one instant."""

    camera: str
    active: str | None
    pending: PendingSnapshot | None
    manual_source: str | None
    """The source an operator pinned, None in automatic mode."""
    delivering: bool
    output_stalls: int
    clients: int
    client_packets_sent: int
    client_packets_dropped: int
    no_source_seconds: float
    incompatible_sources: int
    sources: tuple[SourceSnapshot, ...]
    switches: tuple[SwitchRecord, ...]
    """The last switches kept by the feed, oldest first."""

    @property
    def healthy_sources(self) -> int:
        """How many sources are healthy now."""
        return sum(s.healthy for s in self.sources)

    def source(self, name: str) -> SourceSnapshot | None:
        """The source named ``name``, or None."""
        return next((s for s in self.sources if s.name == name), None)


LOSS_REASONS_KEPT = 5
"""Loss reasons of a source shown (its most recent ones)."""


def snapshot(feed: Feed) -> FeedSnapshot:
    """The state of ``feed`` now (by its own clock)."""
    now = feed.clock()
    merger = feed.merger
    sources = []
    for slot in feed.slots:
        hb = slot.heartbeat
        src = slot.source
        sb = slot.standby
        sources.append(
            SourceSnapshot(
                index=slot.index,
                name=slot.name,
                connected=slot.connected,
                compatible=slot.compatible,
                healthy=slot.healthy(now),
                active=feed.active == slot.index,
                last_packet_age=None if hb.last_packet is None else now - hb.last_packet,
                heartbeat_budget=hb.budget(now),
                path_allowance=hb.path_allowance(now),
                path_stalls=hb.stalls(),
                rtt=hb.rtt,
                frame_interval=hb.interval,
                packets=slot.packets,
                bytes=slot.bytes,
                frames=slot.frames,
                packets_lost=slot.packets_lost,
                packets_dropped=slot.packets_dropped,
                bitrate=slot.bitrate,
                reconnects=src.stats.reconnects if src else 0,
                udp_rejected_packets=src.stats.rejected_packets if src else 0,
                gop_bytes=slot.gop.bytes,
                gop_age=slot.gop.age(now),
                loss_reasons=tuple(slot.lost_reasons[-LOSS_REASONS_KEPT:]),
                merge_state=slot.merge_state if merger else None,
                access_units=merger.stats(slot.index) if merger else None,
                standby=StandbySnapshot(
                    mode=sb.mode,
                    state=slot.standby_state,
                    substream=sb.substream,
                    pause_supported=sb.pause_supported,
                    promotions=sb.promotions,
                ),
                wan_received=slot.wan_received,
                wan_sent=slot.wan_sent,
            )
        )
    pending = feed.pending
    sent, dropped = feed.fanout.client_packets() if feed.fanout else (0, 0)
    return FeedSnapshot(
        camera=feed.camera,
        active=feed.source_name(feed.active),
        pending=None
        if pending is None
        else PendingSnapshot(feed.slots[pending.target].name, pending.reason.value),
        manual_source=feed.source_name(feed.policy.manual),
        delivering=feed.delivering(now),
        output_stalls=feed.output_stalls,
        clients=feed.clients,
        client_packets_sent=sent,
        client_packets_dropped=dropped,
        no_source_seconds=feed.no_source_seconds,
        incompatible_sources=feed.incompatible_sources,
        sources=tuple(sources),
        switches=tuple(feed.switches),
    )


@dataclass(frozen=True, slots=True)
class KeyframeSnapshot:
    """The first access unit of a source's current GOP (its keyframe), copied."""

    encoding: str
    """The video track's encoding name (H264, H265...)."""
    packets: tuple[bytes, ...]
    """Its RTP packets, in order."""
    parameter_sets: dict[int, bytes]
    """The last parameter sets the source sent, by NAL type (empty without a merger)."""


def keyframe(feed: Feed, source: int) -> KeyframeSnapshot | None:
    """The keyframe starting source ``source``'s current GOP, or None when it has none.

    A source's buffer holds that access unit alone, as its assembler made it: parameter
    sets or SEI a recorder sent as a unit of their own (another RTP timestamp, a marker
    bit) come first in it, so every packet is taken, whatever its timestamp and marker.
    Copied on the event loop (a few hundred kilobytes at most), so that decoding it in
    a thread never reads a buffer the packet path reuses."""
    track = feed.video_track
    encoding = feed.video_encoding()
    gop = feed.slots[source].gop
    if track is None or encoding is None or not gop.valid:
        return None
    packets: list[bytes] = []
    for t, pkt in gop.packets:
        if t != track:
            continue
        try:
            rtp.payload_span(pkt)
        except ValueError:
            continue  # malformed: the decoder gets the others
        packets.append(bytes(pkt))
    if not packets:
        return None
    params = feed.merger.parameter_sets(source) if feed.merger is not None else {}
    return KeyframeSnapshot(encoding, tuple(packets), dict(params))
