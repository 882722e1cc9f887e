"""Fuzz-style: random and mutated bytes never crash the RTSP parsers; only ValueError or
ParseError events come out."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from rmfproxy.rtsp.auth import DigestServer, parse_authorization, parse_challenges
from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.headers import RangeHeader, SessionHeader, parse_rtp_info, parse_transports
from rmfproxy.rtsp.message import Request, Response, StreamParser
from rmfproxy.rtsp.sdp import SessionDescription

VALID = (
    b"SETUP rtsp://127.0.0.1:8554/cam/trackID=0 RTSP/1.0\r\nCSeq: 3\r\n"
    b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678;timeout=60\r\n"
    b"Content-Length: 4\r\n\r\nbody$\x00\x00\x02ab"
)


def run_parser(data: bytes, chunk: int) -> None:
    p = StreamParser(lambda c, d: None, max_header_bytes=512, max_body_bytes=64)
    for i in range(0, len(data), chunk):
        p.feed(data[i : i + chunk])
        while (ev := p.next_event()) is not None:
            assert isinstance(ev, Request | Response | ParseError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 64))
def test_random_bytes(data: bytes, chunk: int) -> None:
    run_parser(data, chunk)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(VALID)),
    st.binary(max_size=20),
    st.integers(1, 32),
)
def test_mutated_requests(
    flips: list[tuple[int, int]], cut: int, insert: bytes, chunk: int
) -> None:
    data = bytearray(VALID)
    for pos, val in flips:
        data[pos] = val
    data[cut:cut] = insert
    run_parser(bytes(data), chunk)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_header_and_sdp_parsers_raise_only_value_error(text: str) -> None:
    for fn in (
        parse_transports,
        SessionHeader.parse,
        RangeHeader.parse,
        parse_rtp_info,
        SessionDescription.parse,
        parse_authorization,
    ):
        with contextlib.suppress(ValueError):
            fn(text)
    with contextlib.suppress(ValueError):
        parse_challenges([text])
    DigestServer("r", b"k").verify(text, "DESCRIBE", lambda u: "pw", 0.0)
