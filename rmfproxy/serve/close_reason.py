"""Why a client session ended: a fixed set, logged with every ``rtsp.session_closed``."""

from __future__ import annotations

from enum import StrEnum


class CloseReason(StrEnum):
    """Why the server ended a client session (a :class:`~enum.StrEnum`: each reason equals,
    and is logged as, its string)."""

    TEARDOWN = "teardown"
    """The client sent TEARDOWN."""
    CONNECTION_CLOSED = "connection-closed"
    """The RTSP connection carrying the session's media ended."""
    SESSION_TIMEOUT = "session-timeout"
    """No request or RTCP from the client within its session timeout."""
    SERVER_SHUTDOWN = "server-shutdown"
    CLIENT_STALLED = "client-stalled"
    """The client read nothing for too long; its buffer stayed full."""
    NO_SOURCE = "no-source"
    """The camera had no healthy source for longer than its ``outage_limit``."""
    CAMERA_REMOVED = "camera-removed"
    CAMERA_CHANGED = "camera-changed"
    """The camera was rebuilt by a configuration change."""
    FEED_STOPPED = "feed-stopped"
    """The camera's feed stopped (the proxy stops, or the camera is rebuilt)."""
    CAMERA_STOPPED = "camera-stopped"
    """A simulated camera stopped (``rmfproxy/sim``)."""

    @property
    def drops_connection(self) -> bool:
        """The client's connection is aborted too, so that its player notices at once and
        reconnects (otherwise the connection stays, idle, for its next request)."""
        return self in _DROPPING


_DROPPING = frozenset(
    {
        CloseReason.CLIENT_STALLED,
        CloseReason.NO_SOURCE,
        CloseReason.CAMERA_REMOVED,
        CloseReason.CAMERA_CHANGED,
    }
)
