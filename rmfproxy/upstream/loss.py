"""Why a source's session ended: a fixed set of reasons, and a free detail beside it.

The reason reaches the feed (``on_lost``), its switch records and the metrics' ``reason``
label, so its values are bounded; what varies (an errno's text, an RTSP status, an
exception's name) goes in the detail, which is logged and never a label. A
:class:`~enum.StrEnum`: reasons compare equal to, and serialize as, their strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LossReason(StrEnum):
    """Why a session ended (or never started)."""

    TCP_CLOSED = "tcp-closed"
    """The recorder closed the RTSP connection."""
    TCP_ERROR = "tcp-error"
    """The RTSP connection failed (reset...)."""
    RTCP_BYE = "rtcp-bye"
    """The recorder said the stream ends (RFC 3550 §6.6)."""
    TIMEOUT = "timeout"
    """A request got no reply in time."""
    KEEPALIVE_FAILED = "keepalive-failed"
    CONNECT_FAILED = "connect-failed"
    TLS_VERIFY_FAILED = "tls-verify-failed"
    """The recorder's certificate is not trusted."""
    TLS_FAILED = "tls-failed"
    """The TLS handshake failed for another reason."""
    AUTH_FAILED = "auth-failed"
    RTSP_ERROR = "rtsp-error"
    """An error status (the detail has it)."""
    PROTOCOL_ERROR = "protocol-error"
    """A reply the client cannot use (no SDP, no Session...)."""
    IO_ERROR = "io-error"
    UDP_BIND_FAILED = "udp-bind-failed"
    REDIRECT = "redirect"
    """The recorder sent REDIRECT (RFC 2326 §10.10): reconnect."""
    INTERNAL_ERROR = "internal-error"
    """A bug, logged with its traceback; the source retries."""
    CLOSED = "closed"
    """Closed by the proxy (the source stops or starts over)."""
    PARKED = "parked"
    """Replaced by a set-up session without PLAY (:meth:`RtspSource.park`): not reported."""


@dataclass(frozen=True, slots=True)
class Loss:
    """How a session ended: ``reason`` for counting, ``detail`` for people."""

    reason: LossReason
    detail: str = ""


class Lost(Exception):
    """The session ended (credential-free: both parts may be logged)."""

    def __init__(self, reason: LossReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.loss = Loss(reason, detail)
