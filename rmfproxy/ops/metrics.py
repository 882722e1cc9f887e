"""Prometheus metrics of a running proxy.

Two kinds, both in one registry per proxy (no global state, so tests
can run several proxies in one process):

* Counters and gauges that the packet path already keeps as plain integers on
  the feeds, sources and clients are read at scrape time by a custom collector,
  through one :func:`rmfproxy.relay.snapshot.snapshot` per feed: no per-packet cost
  is added for metrics.
* Switches are events: :meth:`ProxyMetrics.count_switch`, called on every feed's
  switch, counts them and observes the detection time and the switch gap in histograms.

Labels are bounded by the configuration: ``camera``, ``source`` (its name in
the config), ``direction`` (failover, failback, manual, initial) and ``reason``
(a fixed set of causes). No client address or session id is ever a label.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import rmfproxy
from rmfproxy.relay.merge import MergeState
from rmfproxy.relay.snapshot import SwitchRecord, snapshot
from rmfproxy.relay.standby import Mode
from rmfproxy.relay.standby import State as StandbyState

if TYPE_CHECKING:
    from rmfproxy.ops.view import ProxyView

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: cardinality only

DETECTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0, 5.0)
GAP_BUCKETS = (0.02, 0.04, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0, 4.0, 8.0)
LAG_INTERVAL = 0.25
"""Seconds between event-loop lag probes."""


_AU_OUTCOMES = (("sent", "sent"), ("copy", "copies"), ("broken", "broken"), ("late", "late"))


class _FeedCollector(Collector):
    """Reads the feeds' counters at scrape time."""

    def __init__(self, proxy: ProxyView) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        cs = ["camera", "source"]
        up = GaugeMetricFamily(
            "rmfproxy_source_up", "1 while the source's RTSP session is playing.", labels=cs
        )
        healthy = GaugeMetricFamily(
            "rmfproxy_source_healthy",
            "1 while the source is playing, compatible and its RTP is not overdue.",
            labels=cs,
        )
        active = GaugeMetricFamily(
            "rmfproxy_source_active", "1 for the source the camera's clients get.", labels=cs
        )
        pkts = CounterMetricFamily(
            "rmfproxy_source_rtp_packets_received",
            "RTP packets received from the source.",
            labels=cs,
        )
        octets = CounterMetricFamily(
            "rmfproxy_source_rtp_received_bytes",
            "RTP bytes received from the source.",
            labels=cs,
        )
        frames = CounterMetricFamily(
            "rmfproxy_source_frames_received", "Video frames received from the source.", labels=cs
        )
        lost = CounterMetricFamily(
            "rmfproxy_source_rtp_packets_lost",
            "RTP packets missing from the source's sequence numbers.",
            labels=cs,
        )
        dropped = CounterMetricFamily(
            "rmfproxy_source_rtp_packets_dropped",
            "Malformed RTP packets from the source, counted and dropped.",
            labels=cs,
        )
        bitrate = GaugeMetricFamily(
            "rmfproxy_source_received_bytes_per_second",
            "Bytes per second received from the source over the last second (RTP).",
            labels=cs,
        )
        reconnects = CounterMetricFamily(
            "rmfproxy_source_reconnects",
            "Connection attempts after the source's session was lost or failed.",
            labels=cs,
        )
        rejected = CounterMetricFamily(
            "rmfproxy_source_udp_rejected_packets",
            "UDP datagrams on the source's ports from another address or port than the "
            "recorder's (or RTCP BYE naming another SSRC), counted and dropped.",
            labels=cs,
        )
        gop = GaugeMetricFamily(
            "rmfproxy_source_gop_buffer_bytes",
            "Bytes of the source's current GOP kept in memory.",
            labels=cs,
        )
        clients = GaugeMetricFamily(
            "rmfproxy_camera_clients", "RTSP client sessions playing the camera.", labels=["camera"]
        )
        sent = CounterMetricFamily(
            "rmfproxy_camera_client_packets_sent",
            "RTP packets sent to the camera's clients (all clients, gone ones included).",
            labels=["camera"],
        )
        slow = CounterMetricFamily(
            "rmfproxy_camera_client_packets_dropped",
            "RTP packets not sent to a client of the camera because it was too slow.",
            labels=["camera"],
        )
        outage = CounterMetricFamily(
            "rmfproxy_camera_no_healthy_source_seconds",
            "Seconds the camera spent without any healthy source.",
            labels=["camera"],
        )
        healthy_n = GaugeMetricFamily(
            "rmfproxy_camera_healthy_sources", "Healthy sources of the camera.", labels=["camera"]
        )
        incompatible = CounterMetricFamily(
            "rmfproxy_camera_incompatible_sources",
            "Times a source connected with a codec or format other than the announced one "
            "(never switched to).",
            labels=["camera"],
        )
        manual = GaugeMetricFamily(
            "rmfproxy_camera_manual_override",
            "1 while an operator has pinned the camera to a source.",
            labels=["camera"],
        )
        merge = GaugeMetricFamily(
            "rmfproxy_source_merge_state",
            "1 for the source's observed merge state: aligned (same pictures as the outbound "
            "stream, switching is instant), different (another encoding), unknown.",
            labels=[*cs, "state"],
        )
        aus = CounterMetricFamily(
            "rmfproxy_source_access_units",
            "Access units of the source by outcome: sent (first copy), copy (another source's "
            "went first), broken (a packet missing), late (the stream had gone past it).",
            labels=[*cs, "outcome"],
        )
        delivering = GaugeMetricFamily(
            "rmfproxy_camera_delivering",
            "1 while the camera's outbound video flows (something sent within 2 s).",
            labels=["camera"],
        )
        stalls = CounterMetricFamily(
            "rmfproxy_camera_output_stalls",
            "Times the outbound video stopped although the active source was healthy "
            "(the stream was restarted at its next keyframe).",
            labels=["camera"],
        )
        budget = GaugeMetricFamily(
            "rmfproxy_source_freeze_budget_seconds",
            "Silence after which the source is declared frozen: learned from its frame rate "
            "and its path's survived stalls, or the source's fixed stall_timeout.",
            labels=cs,
        )
        path_stalls = GaugeMetricFamily(
            "rmfproxy_source_path_stalls",
            "Survived stalls of the source's path remembered by its freeze budget (10 min).",
            labels=cs,
        )
        rtt = GaugeMetricFamily(
            "rmfproxy_source_rtt_seconds",
            "Round trip of the source's RTSP requests (fastest recent one).",
            labels=cs,
        )
        wan = CounterMetricFamily(
            "rmfproxy_source_wan_bytes",
            "Bytes on the source's connections to its recorder (RTSP TCP connection and RTP/"
            "RTCP UDP sockets; signalling, keepalives and a warm source's sub-stream included), "
            "by direction: received, sent.",
            labels=[*cs, "direction"],
        )
        standby_mode = GaugeMetricFamily(
            "rmfproxy_source_standby_mode",
            "1 for the source's configured standby mode: hot, warm or cold.",
            labels=[*cs, "mode"],
        )
        standby_state = GaugeMetricFamily(
            "rmfproxy_source_standby_state",
            "1 for what the source's connection does now: flowing (main stream pulled), "
            "starting (promoted, no media yet), paused (warm: session kept, no media), "
            "substream (warm: the low-rate standby_url pulled), disconnected.",
            labels=[*cs, "state"],
        )
        promotions = CounterMetricFamily(
            "rmfproxy_source_standby_promotions",
            "Times a warm or cold source was promoted (PLAYed or connected) because the "
            "camera needed it.",
            labels=cs,
        )
        for cam, feed in self.proxy.feeds.items():
            snap = snapshot(feed)
            for src in snap.sources:
                lv = [cam, src.name]
                up.add_metric(lv, 1.0 if src.connected else 0.0)
                healthy.add_metric(lv, 1.0 if src.healthy else 0.0)
                active.add_metric(lv, 1.0 if src.active else 0.0)
                pkts.add_metric(lv, src.packets)
                octets.add_metric(lv, src.bytes)
                frames.add_metric(lv, src.frames)
                lost.add_metric(lv, src.packets_lost)
                dropped.add_metric(lv, src.packets_dropped)
                bitrate.add_metric(lv, src.bitrate / 8)
                reconnects.add_metric(lv, src.reconnects)
                gop.add_metric(lv, src.gop_bytes)
                rejected.add_metric(lv, src.udp_rejected_packets)
                budget.add_metric(lv, src.heartbeat_budget)
                path_stalls.add_metric(lv, src.path_stalls)
                if src.rtt is not None:
                    rtt.add_metric(lv, src.rtt)
                wan.add_metric([*lv, "received"], src.wan_received)
                wan.add_metric([*lv, "sent"], src.wan_sent)
                for mode in Mode:
                    on = src.standby.mode is mode
                    standby_mode.add_metric([*lv, mode.value], 1.0 if on else 0.0)
                for st_sb in StandbyState:
                    on = src.standby.state is st_sb
                    standby_state.add_metric([*lv, st_sb.value], 1.0 if on else 0.0)
                promotions.add_metric(lv, src.standby.promotions)
                if src.merge_state is not None:
                    for st in MergeState:
                        on = src.merge_state is st
                        merge.add_metric([*lv, st.value], 1.0 if on else 0.0)
                if src.access_units is not None:
                    for outcome, key in _AU_OUTCOMES:
                        aus.add_metric([*lv, outcome], src.access_units[key])
            clients.add_metric([cam], snap.clients)
            sent.add_metric([cam], snap.client_packets_sent)
            slow.add_metric([cam], snap.client_packets_dropped)
            outage.add_metric([cam], snap.no_source_seconds)
            healthy_n.add_metric([cam], snap.healthy_sources)
            incompatible.add_metric([cam], snap.incompatible_sources)
            manual.add_metric([cam], 1.0 if snap.manual_source is not None else 0.0)
            delivering.add_metric([cam], 1.0 if snap.delivering else 0.0)
            stalls.add_metric([cam], snap.output_stalls)
        yield from (budget, path_stalls, rtt)
        yield from (up, healthy, active, pkts, octets, frames, lost, dropped, bitrate)
        yield from (reconnects, gop, clients, sent, slow, outage, healthy_n, incompatible, manual)
        yield from (merge, aus, delivering, stalls, rejected)
        yield from (wan, standby_mode, standby_state, promotions)


class _ArchiveCollector(Collector):
    """Reads the coverage journal's cached summary at scrape time (never SQLite)."""

    def __init__(self, proxy: ProxyView) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        uncovered = GaugeMetricFamily(
            "rmfproxy_camera_archive_uncovered_seconds",
            "Seconds of the retention window (since the journal first watched the camera) "
            "that no source covered; recomputed every 10 s.",
            labels=["camera"],
        )
        ratio = GaugeMetricFamily(
            "rmfproxy_source_archive_coverage_ratio",
            "Fraction of the last hour the source delivered healthy video (coverage "
            "journal); recomputed every 10 s.",
            labels=["camera", "source"],
        )
        journal = self.proxy.journal
        for cam, summary in (journal.summary if journal is not None else {}).items():
            uncovered.add_metric([cam], summary.uncovered_seconds)
            for source, r in summary.ratios.items():
                ratio.add_metric([cam, source], r)
        yield uncovered
        yield ratio
        playback = self.proxy.playback
        if playback is None:
            return
        st = playback.stats
        yield GaugeMetricFamily(
            "rmfproxy_playback_sessions",
            "Stitched playback sessions replaying now.",
            value=st.sessions,
        )
        yield CounterMetricFamily(
            "rmfproxy_playback_started",
            "Playback ranges started (PLAY with a Range, seeks included).",
            value=st.started,
        )
        yield CounterMetricFamily(
            "rmfproxy_playback_refused",
            "Playbacks refused with 503: archive.max_playbacks were replaying.",
            value=st.refused,
        )
        per_camera = (
            ("rmfproxy_playback_seams", "Switches between recorders in played streams.", st.seams),
            (
                "rmfproxy_playback_gaps",
                "Holes no recorder had footage for, met in played streams (E/D sent).",
                st.gaps,
            ),
            ("rmfproxy_playback_frames", "Frames sent by stitched playback.", st.frames),
        )
        for name, doc, values in per_camera:
            family = CounterMetricFamily(name, doc, labels=["camera"])
            for cam in sorted({*self.proxy.feeds, *values}):
                family.add_metric([cam], values.get(cam, 0))
            yield family


class _ServerCollector(Collector):
    """The client-facing server's sessions by listener, at scrape time."""

    def __init__(self, proxy: ProxyView) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        server = self.proxy.server
        listener_of = {conn.id: conn.listener for conn in server.connections}
        counts = {"rtsp": 0, "rtsps": 0}
        for session in server.sessions.values():
            # a UDP session outlives its connection; UDP is served on plain RTSP only
            counts[listener_of.get(session.connection_id, "rtsp")] += 1
        family = GaugeMetricFamily(
            "rmfproxy_rtsp_sessions",
            "Client RTSP sessions open now (live and replay), by the listener they came in "
            "on: rtsp (plain) or rtsps (TLS).",
            labels=["listener"],
        )
        for listener, count in counts.items():
            family.add_metric([listener], count)
        yield family
        tls = server.tls
        if tls is not None:
            if tls.not_after is not None:
                yield GaugeMetricFamily(
                    "rmfproxy_tls_certificate_expiry_timestamp_seconds",
                    "Unix time the RTSPS listener's certificate in use expires.",
                    value=tls.not_after,
                )
            reloads = CounterMetricFamily(
                "rmfproxy_tls_certificate_reloads",
                "Certificate reloads (SIGHUP) of the RTSPS listener: ok (the new pair is in "
                "use) or failed (the previous one stays; tls.reload_failed says why).",
                labels=["result"],
            )
            reloads.add_metric(["ok"], tls.reloads)
            reloads.add_metric(["failed"], tls.reload_failures)
            yield reloads
        yield CounterMetricFamily(
            "rmfproxy_rtsp_tls_handshake_failures",
            "TLS handshakes on the RTSPS listener that failed or timed out (the reason is in "
            "the rtsp.tls_handshake_failed log line).",
            value=server.tls_handshake_failures,
        )


class ProxyMetrics:
    """The registry of one proxy, fed by its feeds; serve it with :meth:`exposition`."""

    def __init__(self, proxy: ProxyView) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        Gauge("rmfproxy_build_info", "rmfproxy version.", ["version"], registry=r).labels(
            rmfproxy.__version__
        ).set(1)
        self.switches = Counter(
            "rmfproxy_camera_switches",
            "Switches of the camera's client stream from one source to another.",
            ["camera", "direction", "reason"],
            registry=r,
        )
        self.detection = Histogram(
            "rmfproxy_camera_switch_detection_seconds",
            "From the failed source's last packet to the failover decision.",
            ["camera"],
            buckets=DETECTION_BUCKETS,
            registry=r,
        )
        self.gap = Histogram(
            "rmfproxy_camera_switch_gap_seconds",
            "From the last packet relayed before a switch to the first one after it.",
            ["camera"],
            buckets=GAP_BUCKETS,
            registry=r,
        )
        self.last_switch = Gauge(
            "rmfproxy_camera_last_switch_timestamp_seconds",
            "Unix time of the camera's last switch.",
            ["camera"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "rmfproxy_event_loop_lag_seconds",
            "How late the last event-loop probe woke up (sampled every 250 ms).",
            registry=r,
        )
        self.loop_lag_samples = Histogram(
            "rmfproxy_event_loop_lag_distribution_seconds",
            "Event-loop lag samples.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        r.register(_FeedCollector(proxy))
        r.register(_ArchiveCollector(proxy))
        r.register(_ServerCollector(proxy))
        self._switch_labels: dict[str, set[tuple[str, str]]] = {}
        """Per camera, the (direction, reason) pairs its switch counter has series for."""

    def add_camera(self, camera: str) -> None:
        """Export a camera's switch histograms from zero, so that its first switch shows
        in ``increase()``."""
        self.detection.labels(camera)
        self.gap.labels(camera)

    def remove_camera(self, camera: str) -> None:
        """Drop a removed camera's switch series. The collectors' series go with the feed;
        these are kept by the registry, so without this a camera deleted from the config
        would be exported (and graphed, alerted on) at its last values until a restart."""
        for direction, reason in self._switch_labels.pop(camera, ()):
            self.switches.remove(camera, direction, reason)
        for metric in (self.detection, self.gap, self.last_switch):
            with contextlib.suppress(KeyError):  # never set: no switch yet
                metric.remove(camera)

    def count_switch(self, camera: str, rec: SwitchRecord) -> None:
        """One switch of ``camera`` (the composition root subscribes this to its feed)."""
        self.switches.labels(camera, rec.reason, rec.cause).inc()
        self._switch_labels.setdefault(camera, set()).add((rec.reason, rec.cause))
        self.last_switch.labels(camera).set(rec.at)
        if rec.reason == "initial":
            return
        if rec.reason == "failover":
            self.detection.labels(camera).observe(rec.detection_s)
        self.gap.labels(camera).observe(rec.gap_s)

    async def watch_loop_lag(self) -> None:
        """Probe the event loop's lag until cancelled."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(LAG_INTERVAL)
            lag = max(0.0, time.monotonic() - t - LAG_INTERVAL)
            self.loop_lag.set(lag)
            self.loop_lag_samples.observe(lag)
