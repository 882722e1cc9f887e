"""A feed's asyncio runner: the sources' tasks, one timer, and the standby controls.

What the feed decides (switches, health, merging, outages, sender reports) is in
:class:`rmfproxy.relay.feed_core.FeedCore`, which takes ``now`` and never awaits. The
runner reads the clock, passes the sources' events and packets on, arms exactly the
core's next :meth:`~FeedCore.deadline` (one timer, re-armed after it fires and after the
rare events that can bring it forward, never per packet), and executes the standby
controls the core queues: PLAY, PAUSE, connect, TEARDOWN, each as a task whose outcome
goes back to the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from rmfproxy.relay.feed_core import DEFAULT_TUNING, EARLY, FeedCore, FeedTuning
from rmfproxy.relay.merge import Merger
from rmfproxy.relay.policy import Decision, SwitchPolicy
from rmfproxy.relay.slot import SourceSlot
from rmfproxy.relay.standby import Action, Mode, Standby
from rmfproxy.relay.switch_record import SwitchRecord
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.close_reason import CloseReason
from rmfproxy.serve.fanout import Fanout
from rmfproxy.serve.stream import MediaSink, TrackStart
from rmfproxy.upstream.loss import LossReason
from rmfproxy.upstream.source import RtspSource

__all__ = ["Feed", "SourceSlot", "StandbySpec", "SwitchRecord"]

log = structlog.get_logger(__name__)

STOP_TIMEOUT = 0.8
"""Longest :meth:`Feed.stop` waits for the sources' TEARDOWNs (each gives up after 0.5 s;
a dead recorder must not hang a shutdown or a reconfiguration)."""


class _Listener:
    """Routes one source's callbacks to the feed with the source's index."""

    __slots__ = ("_clock", "_core", "_on_packet", "feed", "index")

    def __init__(self, feed: Feed, index: int) -> None:
        self.feed = feed
        self.index = index
        # The hot path's lookups, done once (the feed's core and clock never change).
        self._core = feed.core
        self._on_packet = feed.core.on_packet
        self._clock = feed.clock

    def on_connected(self, sdp: SessionDescription) -> None:
        feed = self.feed
        feed.core.on_connected(self.index, sdp, feed.clock())
        feed._after_event()

    def on_packet(self, track: int, rtcp: bool, data: bytearray) -> None:
        self._on_packet(self.index, track, rtcp, data, self._clock())
        if self._core.controls:  # a switch: the source it left stands by again
            self.feed._start_controls()

    def on_lost(self, reason: LossReason) -> None:
        feed = self.feed
        feed.core.on_lost(self.index, reason, feed.clock())
        feed._after_event()

    def on_ready(self, sdp: SessionDescription) -> None:
        feed = self.feed
        feed.core.on_ready(self.index, sdp, feed.clock())
        feed._after_event()


class _SubListener:
    """A warm source's sub-stream: liveness only (its media is counted, never relayed)."""

    __slots__ = ("feed", "index")

    def __init__(self, feed: Feed, index: int) -> None:
        self.feed = feed
        self.index = index

    def on_connected(self, sdp: SessionDescription) -> None:
        self.feed.core.on_substream_connected(self.index)

    def on_packet(self, track: int, rtcp: bool, data: bytearray) -> None:
        self.feed.core.on_substream_packet(self.index, rtcp, data, self.feed.clock())

    def on_lost(self, reason: LossReason) -> None:
        self.feed.core.on_substream_lost(self.index, reason)


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
        tuning: FeedTuning = DEFAULT_TUNING,
        *,
        clock: Callable[[], float] = time.monotonic,
        standby: Sequence[StandbySpec] | None = None,
    ) -> None:
        specs = list(standby or [])
        self.core = FeedCore(
            camera,
            count,
            tuning,
            standby=[
                Standby(s.mode, substream=s.mode is Mode.WARM and s.make_substream is not None)
                for s in specs
            ],
        )
        self.core.on_switch = self._switched
        self.clock = clock
        for i, slot in enumerate(self.core.slots):
            slot.name, slot.source = make_source(i, _Listener(self, i))
        for slot, spec in zip(self.core.slots, specs, strict=False):
            if slot.standby.substream:
                assert spec.make_substream is not None
                slot.sub = spec.make_substream(_SubListener(self, slot.index))
            if spec.mode is not Mode.HOT:
                assert slot.source is not None
                slot.source.autoplay = False  # warm: set up, no PLAY; cold: not started
        self.on_switch: list[Callable[[Feed, SwitchRecord], None]] = []
        """Called after every switch (metrics)."""
        self._tasks: list[asyncio.Task[None]] = []
        """The hot sources' loops."""
        self._runs: dict[tuple[int, bool], asyncio.Task[None]] = {}
        """Source loops started on demand: (slot, sub-stream?) -> task."""
        self._controls: dict[int, asyncio.Task[None]] = {}
        """The promotion or demotion under way per slot (one at a time)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        """The core's deadline the timer is armed for (feed clock)."""

    # the core's state, as before the split ---------------------------------------------

    @property
    def camera(self) -> str:
        """The camera's id."""
        return self.core.camera

    @property
    def hitless(self) -> bool:
        """Switches between sources carrying the same pictures are made without a restart."""
        return self.core.hitless

    @property
    def outage_limit(self) -> float:
        """Seconds clients wait through an outage before they are closed."""
        return self.core.outage_limit

    @property
    def slots(self) -> list[SourceSlot]:
        """The configured sources, in priority order."""
        return self.core.slots

    @property
    def active(self) -> int | None:
        """The index of the source relayed now (None before the first)."""
        return self.core.active

    @property
    def pending(self) -> Decision | None:
        """The switch planned, made at its target's next keyframe (or None)."""
        return self.core.pending

    @property
    def policy(self) -> SwitchPolicy:
        """Priorities, hold-down and manual pin."""
        return self.core.policy

    @property
    def merger(self) -> Merger | None:
        """The outbound video of H.264/H.265 (None for other encodings and before the SDP)."""
        return self.core.merger

    @property
    def fanout(self) -> Fanout | None:
        """The clients (None before the first source told its SDP)."""
        return self.core.fanout

    @property
    def video_track(self) -> int | None:
        """The index of the video track of the client SDP (None without video)."""
        return self.core.video_track

    @property
    def switches(self) -> list[SwitchRecord]:
        """The last 50 switches."""
        return self.core.switches

    @property
    def switch_count(self) -> int:
        """Every switch since the start."""
        return self.core.switch_count

    @property
    def no_source_since(self) -> float | None:
        """Since when no source has been healthy (None while one is)."""
        return self.core.no_source_since

    @property
    def no_source_seconds(self) -> float:
        """Total time spent without any healthy source (once a source has been relayed)."""
        return self.core.no_source_seconds

    @property
    def output_stalls(self) -> int:
        """Times the outbound video stopped while the active source was healthy."""
        return self.core.output_stalls

    @property
    def dropped_packets(self) -> int:
        """Malformed packets counted and dropped, every source."""
        return self.core.dropped_packets

    @property
    def incompatible_sources(self) -> int:
        """Sessions whose tracks differed from the client SDP's."""
        return self.core.incompatible_sources

    # MediaStream -------------------------------------------------------------------

    def sdp(self) -> SessionDescription | None:
        """The client SDP, fixed by the first source that connected (None before that)."""
        return self.core.sdp()

    def ssrc(self, track: int) -> int:
        """The proxy-owned outbound SSRC of ``track``."""
        return self.core.ssrc(track)

    def start_points(self) -> dict[int, TrackStart]:
        """Where a client attached now starts."""
        return self.core.start_points()

    def attach(self, sink: MediaSink) -> None:
        """Add a client (sender reports become due)."""
        self.core.attach(sink)
        self._rearm()

    def detach(self, sink: MediaSink) -> None:
        """Remove a client."""
        self.core.detach(sink)

    def video_encoding(self) -> str | None:
        """Encoding name of the announced video track (H264, H265), None without video."""
        return self.core.video_encoding()

    @property
    def clients(self) -> int:
        """Number of attached clients."""
        return self.core.clients

    def delivering(self, now: float) -> bool:
        """True while clients get video: something went out within the stall bound."""
        return self.core.delivering(now)

    # control -----------------------------------------------------------------------

    def switch_to(self, source: str | None) -> None:
        """Pin a source by name (None: back to automatic); the switch is made at a keyframe."""
        self.core.switch_to(source, self.clock())
        self._after_event()

    def source_name(self, index: int | None) -> str | None:
        """Name of a source index."""
        return self.core.source_name(index)

    def _switched(self, rec: SwitchRecord) -> None:
        for callback in self.on_switch:
            callback(self, rec)

    # lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start pulling every source, and the timer of the health checks and reports."""
        self.core.on_start(self.clock())
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
        self._arm()

    async def stop(self) -> None:
        """End every session with TEARDOWN (all at once, bounded: a dead recorder must not
        hang a shutdown), stop every loop and drop every client."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        controls = list(self._controls.values())
        for t in controls:
            t.cancel()
        if controls:
            await asyncio.wait(controls)
        hot = [s.source for s in self.slots if s.standby.mode is Mode.HOT]
        runs = [
            (self.slots[i].sub if sub else self.slots[i].source, t)
            for (i, sub), t in self._runs.items()
        ]
        loops = [*zip(hot, self._tasks, strict=False), *runs]
        closing = [
            asyncio.ensure_future(src.aclose())
            for src, t in loops
            if src is not None and not t.done()
        ]
        if closing:
            _, late = await asyncio.wait(closing, timeout=STOP_TIMEOUT)
            for t in late:
                t.cancel()
            if late:
                await asyncio.wait(late)
        for _, t in loops:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if runs:
            await asyncio.wait([t for _, t in runs])
        self._tasks.clear()
        self._controls.clear()
        self._runs.clear()
        if self.fanout is not None:
            self.fanout.close_all(CloseReason.FEED_STOPPED)

    # the timer ---------------------------------------------------------------------

    def _arm(self) -> None:
        """Arm the timer for the core's deadline unless it is armed for earlier already."""
        when = self.core.deadline()
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        delay = max(0.0, when - self.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # called early (a test stepping the clock): one timer only
            self._timer = None
        now = self.clock()
        try:
            # The timer is not moved per packet (that would cost a deadline() and a new
            # timer per packet): a healthy source's packets have usually put the deadline
            # later since it was armed, and then nothing is due yet.
            if self.core.deadline() <= now + EARLY:
                self.core.on_timer(now)
                self._start_controls()
        finally:
            self._arm()  # whatever happened, the checks go on

    def _after_event(self) -> None:
        """A source event or a command was handled: start the controls it queued, and
        bring the timer forward if the deadline moved."""
        self._start_controls()
        self._rearm()

    def _rearm(self) -> None:
        if self._timer is not None:  # started, not stopped
            self._arm()

    # standby controls --------------------------------------------------------------

    def _start_controls(self) -> None:
        controls, self.core.controls = self.core.controls, []
        for index, action in controls:
            slot = self.slots[index]
            work: Coroutine[Any, Any, None]
            if action is Action.PROMOTE:
                work = self._promote(slot)
            elif action is Action.DEMOTE:
                work = self._demote(slot)
            else:
                work = self._park(slot)
            task = asyncio.create_task(work, name=f"standby-{self.camera}-{slot.name}")
            self._controls[index] = task
            task.add_done_callback(functools.partial(self._control_done, index))

    def _control_done(self, index: int, t: asyncio.Task[None]) -> None:
        if self._controls.get(index) is t:
            del self._controls[index]
            self.core.on_control_done(index)
        if not t.cancelled() and t.exception() is not None:
            log.error(
                "feed.standby_error",
                camera=self.camera,
                source=self.slots[index].name,
                error=repr(t.exception())[:200],
            )

    def _start_run(self, slot: SourceSlot, *, sub: bool) -> None:
        src = slot.sub if sub else slot.source
        assert src is not None
        key = (slot.index, sub)
        if key in self._runs:
            return
        task = asyncio.create_task(src.run(), name=f"source-{self.camera}-{slot.name}")
        self._runs[key] = task
        if not sub:
            self.core.on_run_state(slot.index, True)

        def done(t: asyncio.Task[None]) -> None:
            if self._runs.get(key) is t:
                del self._runs[key]
                if not sub:
                    self.core.on_run_state(slot.index, False)

        task.add_done_callback(done)

    async def _stop_run(self, slot: SourceSlot, *, sub: bool) -> None:
        src = slot.sub if sub else slot.source
        assert src is not None
        await src.aclose()  # TEARDOWN (at most 0.5 s), then the loop ends
        task = self._runs.pop((slot.index, sub), None)
        if not sub:
            self.core.on_run_state(slot.index, False)
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
            self.core.on_substream_stopped(slot.index)
        self._start_run(slot, sub=False)

    async def _demote(self, slot: SourceSlot) -> None:
        sb, src = slot.standby, slot.source
        assert src is not None
        src.autoplay = False
        if sb.mode is Mode.WARM and not sb.substream:
            if not sb.pause_supported:
                await self._park(slot)
            elif self.core.on_pause_result(slot.index, await src.pause()):
                await self._park(slot)  # refused: TEARDOWN + SETUP from now on
            return
        await self._stop_run(slot, sub=False)
        self.core.on_main_stopped(slot.index)
        if sb.substream:
            self._start_run(slot, sub=True)

    async def _park(self, slot: SourceSlot) -> None:
        assert slot.source is not None
        self.core.on_parking(slot.index)
        await slot.source.park()  # the new session reports on_ready
