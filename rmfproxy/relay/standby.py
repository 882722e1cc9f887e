"""Standby modes of a source, without I/O (the caller passes ``now`` and does the I/O).

Pulling every source all the time (*hot* standby) doubles the WAN traffic of a camera;
a remote site may not afford it. A source's mode applies while the feed is neither
relaying it nor about to relay it (the *active* source, or the target of a pending
switch, is always pulled):

* ``hot``: pulled all the time (the default; a switch to it is hitless or within a GOP).
* ``warm``: an RTSP session kept alive without media. It is set up and left in READY
  (RFC 2326 §A.1: SETUP without PLAY) or PAUSEd (§10.6) after it was relayed;
  keepalives keep it and tell whether the recorder is up (a failed keepalive or a closed
  connection makes it unavailable). *Promoted* with PLAY (§10.5). With ``standby_url``
  it pulls that low-rate sub-stream instead (its RTP is the liveness signal) and is
  promoted by a session on the main URL. A recorder that refuses PAUSE (an error
  status) or ignores it (media more than ``PAUSE_GRACE`` after the reply) is demoted
  by TEARDOWN and a new session set up without PLAY: the same READY state, one
  reconnect dearer.
* ``cold``: not connected at all; promoted by connecting and playing, demoted by
  TEARDOWN. Its health is unknown until then: it is presumed available unless its
  last promotion failed within ``RETRY_AFTER`` (so the first source cannot be cold:
  failback would never know it is back).

A promotion that brings no media within ``PROMOTE_TIMEOUT`` failed: the source is not
chosen again for ``RETRY_AFTER`` seconds. :meth:`Standby.plan` says what to do now;
the feed's runner does it and reports the outcome through the ``on_*`` methods.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PROMOTE_TIMEOUT = 8.0
"""Seconds a promoted source has to deliver its first packet (connect, DESCRIBE, SETUP,
PLAY over a WAN link, with the upstream's 5 s connect timeout inside)."""
RETRY_AFTER = 5.0
"""Seconds a source whose promotion failed is not chosen again."""


class Mode(enum.Enum):
    """How a source is pulled while it stands by (``standby`` in the configuration)."""

    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


class State(enum.Enum):
    """What a source's connection does now (the metric's ``state`` label)."""

    FLOWING = "flowing"
    """Its main stream plays (media is pulled)."""
    STARTING = "starting"
    """Promoted: connecting or PLAY sent, no media yet."""
    PAUSED = "paused"
    """Warm: a session in READY (never played, or PAUSEd): keepalives only."""
    SUBSTREAM = "substream"
    """Warm with ``standby_url``: the low-rate sub-stream plays."""
    DISCONNECTED = "disconnected"
    """No session (cold, or lost and reconnecting)."""


class Action(enum.Enum):
    """What the runner should do with a source now."""

    PROMOTE = "promote"
    """Start pulling its main stream (PLAY, or connect)."""
    DEMOTE = "demote"
    """Back to its standby mode (PAUSE or TEARDOWN + SETUP, sub-stream, or disconnect)."""
    PARK = "park"
    """TEARDOWN and a new session without PLAY: a recorder that ignores PAUSE (never
    returned by :meth:`Standby.plan`; the feed decides it from the media)."""


@dataclass
class Standby:
    """One source's standby mode and the state of its connection."""

    mode: Mode = Mode.HOT
    substream: bool = False
    """Warm with a sub-stream (``standby_url``) instead of a paused session."""
    state: State = State.DISCONNECTED
    pause_supported: bool = True
    """False once the recorder refused or ignored a PAUSE (demoted by park from then on)."""
    promoted_at: float = 0.0
    failed_until: float = 0.0
    """Not chosen before this time (its last promotion failed)."""
    promotions: int = 0
    """Promotions since the start."""

    @property
    def on_demand(self) -> bool:
        """Not hot: pulled only while relayed (or about to be)."""
        return self.mode is not Mode.HOT

    def available(self, now: float, substream_alive: bool = False) -> bool:
        """Can be promoted (or is being promoted) now. Hot sources never are: they are
        either healthy (flowing) or not. ``substream_alive``: the sub-stream delivers RTP
        within its heartbeat budget."""
        if self.mode is Mode.HOT or now < self.failed_until:
            return False
        state = self.state
        if state is State.STARTING:
            return True
        if state is State.PAUSED:
            return self.mode is Mode.WARM
        if state is State.SUBSTREAM:
            return substream_alive
        return self.mode is Mode.COLD and state is State.DISCONNECTED

    def plan(self, wanted: bool, now: float, running: bool) -> Action | None:
        """What to do now. ``wanted``: the feed relays it or is about to; ``running``: its
        main session's loop runs (always for warm without a sub-stream)."""
        if self.mode is Mode.HOT:
            return None
        if self.state is State.STARTING and now - self.promoted_at > PROMOTE_TIMEOUT:
            self.failed_until = now + RETRY_AFTER
            return Action.DEMOTE
        if wanted:
            if self.state in (State.PAUSED, State.SUBSTREAM):
                return Action.PROMOTE
            if self.state is State.DISCONNECTED and self._started_on_demand and not running:
                return Action.PROMOTE
            return None
        if self.state in (State.STARTING, State.FLOWING):
            return Action.DEMOTE
        if self.state is State.DISCONNECTED and self._started_on_demand and running:
            return Action.DEMOTE  # a reconnect loop nobody needs any more
        return None

    @property
    def _started_on_demand(self) -> bool:
        """Its main session runs only while promoted (cold, or warm with a sub-stream)."""
        return self.mode is Mode.COLD or self.substream

    # outcomes ------------------------------------------------------------------

    def on_promote(self, now: float) -> None:
        """The runner starts a promotion."""
        self.state = State.STARTING
        self.promoted_at = now
        self.promotions += 1

    def on_playing(self, now: float) -> None:
        """The main session answered PLAY (media follows)."""
        if self.state is not State.STARTING:
            self.state = State.STARTING
            self.promoted_at = now

    def on_media(self) -> None:
        """The main session's first packet after PLAY."""
        if self.state is State.STARTING:
            self.state = State.FLOWING

    def on_ready(self) -> None:
        """A main session is set up without media (READY), or was PAUSEd."""
        self.state = State.PAUSED

    def on_lost(self, now: float) -> None:
        """The main session ended (not by the runner)."""
        if self.state is State.STARTING:
            self.failed_until = now + RETRY_AFTER
        if self.state is not State.SUBSTREAM:
            self.state = State.DISCONNECTED

    def on_substream(self, up: bool) -> None:
        """The sub-stream's session started playing (``up``) or ended."""
        if up and self.state is State.DISCONNECTED:
            self.state = State.SUBSTREAM
        elif not up and self.state is State.SUBSTREAM:
            self.state = State.DISCONNECTED

    def on_demoted(self) -> None:
        """The runner stopped the main stream (the sub-stream, if any, is starting)."""
        self.state = State.DISCONNECTED
