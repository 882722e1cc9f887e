"""The two error families of the RTSP core (after h11's split).

``RtspError`` is any rejected input; ``ParseError`` is the remote side breaking
the protocol and carries the status the server should answer with.
"""

from __future__ import annotations


class RtspError(ValueError):
    """Input the RTSP core rejects."""


class ParseError(RtspError):
    """The peer sent something that is not valid RTSP; ``status`` is the reply to give."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
