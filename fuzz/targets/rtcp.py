"""RTCP compound packets (rmfproxy/rtp/rtcp.py).

Contract: ``parse_compound`` rejects with ``ValueError`` only;
``is_rtcp_bye`` never raises ("malformed input is False") and, for a packet
that parses, agrees with the parse.
"""

from __future__ import annotations

from fuzz.targets import check
from rmfproxy.rtp import rtcp

MAX_LEN = 65535 + 4

DICTIONARY = (
    b"\x80\xc8\x00\x06",
    b"\x81\xc9\x00\x07",
    b"\x81\xca",
    b"\x81\xcb\x00\x01",
    b"\x80\xcc",
)


def test_one_input(data: bytes) -> None:
    """Parse the compound packet and run the cheap BYE check on it."""
    bye = rtcp.is_rtcp_bye(data)
    check(isinstance(bye, bool), "is_rtcp_bye returns a bool")
    try:
        packets = rtcp.parse_compound(data)
    except ValueError:
        return
    check(bool(packets), "a parsed compound packet holds at least one packet")
    check(bye == any(isinstance(p, rtcp.Bye) for p in packets), "is_rtcp_bye agrees with the parse")
    for p in packets:
        if isinstance(p, rtcp.SenderReport | rtcp.ReceiverReport):
            for b in p.reports:
                check(
                    -(1 << 23) <= b.cumulative_lost < (1 << 23), "cumulative lost is 24-bit signed"
                )
