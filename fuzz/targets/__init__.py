"""Fuzz targets, one module per parser.

Each module defines ``test_one_input(data: bytes) -> None``, which feeds
``data`` to its parser and lets an exception escape only when the parser broke
its contract: every module states which rejection each API documents (usually
``ValueError``) and suppresses exactly that. A harness-level property that
does not hold (a round trip, whole-vs-chunked feeding) raises
:class:`InvariantError`, which the runner reports apart from crashes.
Optional ``DICTIONARY`` lists tokens the mutators splice in; ``MAX_LEN`` caps
the input size (the largest input the proxy would hand that parser, or less);
``timed(data)`` is the part whose time the 10 ms bound applies to, when the
harness does more than parse (default: ``test_one_input``).
"""

from __future__ import annotations

NAMES = (
    "rtsp_stream",
    "rtsp_headers",
    "sdp",
    "auth_client",
    "auth_server",
    "rtp",
    "rtcp",
    "nal",
    "merger",
)


class InvariantError(AssertionError):
    """A property the harness checks (not the parser's own rejection) does not hold."""


def check(condition: bool, what: str) -> None:
    """Raise :class:`InvariantError` naming ``what`` unless ``condition`` holds."""
    if not condition:
        raise InvariantError(what)
