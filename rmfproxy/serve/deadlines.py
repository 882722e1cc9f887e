"""When a client connection must be closed for slowness or silence (no I/O, no clock).

Theory of operation. A connection holds two deadlines, after aioquic's
``get_timer()``: the driver tells :class:`ConnectionDeadlines` what it received and
when (``now``), asks :meth:`~ConnectionDeadlines.deadline` when to call back, arms one
timer for it, and on that timer asks :meth:`~ConnectionDeadlines.expired` which reason,
if any, closes the connection.

- *Request timeout*: once a request (or interleaved frame) has started to arrive, it must
  be whole within ``request_timeout`` seconds. A slow-loris client that trickles a head
  a byte at a time is closed; a client that keeps the stream busy with complete messages
  restarts the clock with each one.
- *Idle timeout*: a connection with no live session is closed after ``idle_timeout``
  seconds without a complete message. With a session, the session timeout governs
  (RFC 2326 §12.37) and the connection may stay silent (UDP clients keep alive over RTCP).
"""

from __future__ import annotations

import enum


class CloseReason(enum.Enum):
    """Why a deadline closed a connection."""

    REQUEST_TIMEOUT = "request-timeout"
    IDLE_TIMEOUT = "idle-timeout"


class ConnectionDeadlines:
    """The request and idle deadlines of one client connection."""

    def __init__(self, request_timeout: float, idle_timeout: float, now: float) -> None:
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self._partial_since: float | None = None
        self._last_message = now

    def on_input(self, now: float, *, completed: int, partial: bool) -> None:
        """Bytes arrived: ``completed`` whole messages/frames, ``partial`` one unfinished."""
        if completed:
            self._last_message = now
        if not partial:
            self._partial_since = None
        elif completed or self._partial_since is None:
            self._partial_since = now

    def deadline(self, *, has_session: bool) -> float | None:
        """When :meth:`expired` may next return a reason (None: no deadline)."""
        ends: list[float] = []
        if self._partial_since is not None:
            ends.append(self._partial_since + self.request_timeout)
        if not has_session:
            ends.append(self._last_message + self.idle_timeout)
        return min(ends) if ends else None

    def expired(self, now: float, *, has_session: bool) -> CloseReason | None:
        """The reason to close the connection at ``now``, if a deadline passed."""
        if self._partial_since is not None and now >= self._partial_since + self.request_timeout:
            return CloseReason.REQUEST_TIMEOUT
        if not has_session and now >= self._last_message + self.idle_timeout:
            return CloseReason.IDLE_TIMEOUT
        return None
