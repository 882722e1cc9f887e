"""Typed RTSP header values (rmfproxy/rtsp/headers.py): Transport, Session, Range,
RTP-Info, CSeq, Public.

The input reads as one header line, ``Name: value``; the name picks the parser
(an unknown name runs them all on the value). Contract: every ``parse*``
function rejects with ``ValueError`` only; ``parse_public`` never raises.
A parsed value must serialize to text that parses back to the same fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fuzz.targets import InvariantError, check
from rmfproxy.rtsp.headers import (
    RangeHeader,
    SessionHeader,
    TransportSpec,
    format_rtp_info,
    parse_cseq,
    parse_public,
    parse_rtp_info,
    parse_transports,
)

T = TypeVar("T")

MAX_LEN = 16384
"""A header block is at most 16 KiB (StreamParser's default cap)."""

DICTIONARY = (
    b"Transport: ",
    b"Session: ",
    b"Range: ",
    b"RTP-Info: ",
    b"CSeq: ",
    b"Public: ",
    b"RTP/AVP",
    b"RTP/AVP/TCP",
    b"RTP/AVP/UDP",
    b";unicast",
    b";multicast",
    b";interleaved=",
    b";client_port=",
    b";server_port=",
    b";ssrc=",
    b";mode=",
    b";ttl=",
    b";destination=",
    b";source=",
    b";timeout=",
    b"npt=",
    b"clock=",
    b"smpte=",
    b"url=",
    b";seq=",
    b";rtptime=",
    "\u00b2".encode(),  # a digit to str.isdigit(), not to int()
    "\u0663".encode(),  # ARABIC-INDIC THREE: a digit to both
)


def _reparse(parse: Callable[[str], T], text: str, what: str) -> T:
    """``parse(text)`` of what ``serialize()`` wrote; a rejection is an invariant failure."""
    try:
        return parse(text)
    except ValueError:
        raise InvariantError(f"{what}: serialize() writes what parse() accepts") from None


def _transport(value: str) -> None:
    try:
        specs = parse_transports(value)
    except ValueError:
        return
    for spec in specs:
        again = _reparse(TransportSpec.parse, spec.serialize(), "Transport")
        for name in ("lower_transport", "unicast", "interleaved", "client_port", "server_port"):
            check(getattr(again, name) == getattr(spec, name), f"Transport {name} round-trips")
        check(again.ssrc == spec.ssrc and again.ttl == spec.ttl, "Transport ssrc/ttl round-trip")


def _session(value: str) -> None:
    try:
        s = SessionHeader.parse(value)
    except ValueError:
        return
    check(_reparse(SessionHeader.parse, s.serialize(), "Session") == s, "Session round-trips")


def _range(value: str) -> None:
    try:
        r = RangeHeader.parse(value)
    except ValueError:
        return
    check(_reparse(RangeHeader.parse, r.serialize(), "Range") == r, "Range round-trips")


def _rtp_info(value: str) -> None:
    try:
        infos = parse_rtp_info(value)
    except ValueError:
        return
    if infos:
        again = _reparse(parse_rtp_info, format_rtp_info(infos), "RTP-Info")
        check(again == infos, "RTP-Info round-trips")


def _cseq(value: str) -> None:
    try:
        n = parse_cseq(value)
    except ValueError:
        return
    check(0 <= n < 10**10, "CSeq is a non-negative number of at most 10 digits")


def _public(value: str) -> None:
    for m in parse_public(value):
        check(bool(m) and "," not in m, "Public methods are non-empty tokens")


PARSERS: dict[str, Callable[[str], None]] = {
    "transport": _transport,
    "session": _session,
    "range": _range,
    "rtp-info": _rtp_info,
    "cseq": _cseq,
    "public": _public,
}


def test_one_input(data: bytes) -> None:
    """Run the parser the header name picks (or all) on the value."""
    line = data.decode("utf-8", "replace")
    name, sep, value = line.partition(":")
    parser = PARSERS.get(name.strip().lower()) if sep else None
    if parser is not None:
        parser(value.strip())
        return
    for fn in PARSERS.values():
        fn(line)
