"""RTSP byte stream: ``StreamParser`` (requests, responses, ``$`` frames) and ``Request/Response``.

Contract (rmfproxy/rtsp/message.py): ``feed()`` and ``next_event()`` never
raise; a malformed message comes out as a ``ParseError`` event. ``.cseq`` is
an int or None. ``serialize()`` may reject a method or URI with ``ValueError``.

The input is fed twice, whole and in three reads split at a third and two
thirds of its length, and both feeds must give the same messages and frames:
a TCP peer decides where reads split, not us. (Byte-by-byte feeding would find
the same differences but costs a Python call per byte: 70 inputs/s under
atheris. What many tiny reads cost is measured apart, see fuzz/README.md.)
"""

from __future__ import annotations

import contextlib
import itertools

from fuzz.targets import InvariantError, check
from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.message import Request, Response, StreamParser

MAX_LEN = 20000
"""Above the 16 KiB header cap, so the 413 path is reachable."""

DICTIONARY = (
    b"RTSP/1.0",
    b" RTSP/1.0\r\n",
    b"RTSP/1.0 200 OK\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\n\n",
    b"CSeq: ",
    b"Content-Length: ",
    b"Session: ",
    b"Transport: ",
    b"$\x00\x00\x04",
    b"$\x01\x00\x00",
    b"OPTIONS ",
    b"DESCRIBE ",
    b"SETUP ",
    b"PLAY ",
    b"rtsp://127.0.0.1:8554/cam",
    b"\r\n ",
    b"\r\n\t",
    "\u00b2".encode(),  # a digit to str.isdigit(), not to int()
    "\u0663".encode(),  # ARABIC-INDIC THREE: a digit to both
)


def _parse(data: bytes, cuts: tuple[int, ...]) -> tuple[list[object], list[tuple[int, bytes]], int]:
    frames: list[tuple[int, bytes]] = []

    def on_frame(channel: int, payload: bytearray) -> None:
        check(0 <= channel <= 255 and len(payload) <= 0xFFFF, "frame channel/length in range")
        frames.append((channel, bytes(payload)))

    parser = StreamParser(on_frame)
    events: list[object] = []
    bounds = (0, *cuts, len(data))
    for a, b in itertools.pairwise(bounds):
        parser.feed(data[a:b])
        while (ev := parser.next_event()) is not None:
            events.append(_describe(ev))
    return events, frames, parser.garbage_bytes


def _describe(ev: object) -> object:
    if isinstance(ev, ParseError):
        return ("error", ev.status, str(ev))
    if isinstance(ev, Request):
        cseq = ev.cseq
        check(cseq is None or isinstance(cseq, int), "Request.cseq is int or None")
        with contextlib.suppress(ValueError):
            ev.serialize()
        return ("request", ev.method, ev.uri, ev.headers.items(), ev.body)
    if isinstance(ev, Response):
        cseq = ev.cseq
        check(cseq is None or isinstance(cseq, int), "Response.cseq is int or None")
        ev.serialize()
        return ("response", ev.status, ev.reason, ev.headers.items(), ev.body)
    raise InvariantError(f"unexpected event type {type(ev).__name__}")


def timed(data: bytes) -> None:
    """The parse alone, for timing: the whole input in one read, every event drained."""
    parser = StreamParser(lambda channel, payload: None)
    parser.feed(data)
    while parser.next_event() is not None:
        pass


def test_one_input(data: bytes) -> None:
    """Parse ``data`` whole and in three reads; the results must agree."""
    *whole, garbage = _parse(data, ())
    n = len(data)
    *split, _ = _parse(data, (n // 3, 2 * n // 3))
    # Two properties, so that the known garbage-resync difference (fuzz/findings) does
    # not hide others behind the same signature.
    check(whole == split or garbage > 0, "split feeding changes a garbage-free stream")
    check(whole == split, "split feeding changes what follows garbage")
