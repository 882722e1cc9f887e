"""A client's RTSP session: its state, its set-up tracks and its sink (RFC 2326 §A.1)."""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rmfproxy.serve.sink import ClientSink, TcpTrack, UdpTrack
from rmfproxy.serve.stream import MediaStream


class State(enum.Enum):
    """RTSP server session states (RFC 2326 §A.2)."""

    READY = "ready"
    PLAYING = "playing"
    CLOSED = "closed"


ALLOWED: dict[str, frozenset[State]] = {
    "SETUP": frozenset({State.READY}),
    "PLAY": frozenset({State.READY, State.PLAYING}),
    "PAUSE": frozenset({State.READY, State.PLAYING}),
    "TEARDOWN": frozenset({State.READY, State.PLAYING}),
    "GET_PARAMETER": frozenset({State.READY, State.PLAYING}),
    "SET_PARAMETER": frozenset({State.READY, State.PLAYING}),
    "OPTIONS": frozenset({State.READY, State.PLAYING}),
}
"""Which methods a session accepts in which state; anything else is 455."""


def new_session_id() -> str:
    """A random, unguessable session identifier (RFC 2326 §12.37: at least 8 octets)."""
    return secrets.token_hex(8)


@dataclass(eq=False)
class ClientSession:
    """One client's session on one served path."""

    id: str
    path: str
    stream: MediaStream
    user: str | None
    timeout: int
    connection_id: int
    """Identity of the RTSP connection that created it (interleaved tracks die with it)."""
    tracks: dict[int, TcpTrack | UdpTrack] = field(default_factory=dict)
    state: State = State.READY
    sink: ClientSink | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    """The server's clock (a test's fake one moves only when told)."""
    last_seen: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_seen = self.clock()

    def touch(self) -> None:
        """Any request or RTCP receiver report keeps the session alive (ONVIF streaming §5.2)."""
        self.last_seen = self.clock()

    def expired(self, now: float) -> bool:
        """True once nothing was heard from the client for the announced timeout."""
        return now - self.last_seen > self.timeout

    @property
    def uses_tcp(self) -> bool:
        """True if any track is interleaved on the RTSP connection."""
        return any(isinstance(t, TcpTrack) for t in self.tracks.values())
