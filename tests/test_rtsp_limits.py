"""Hardening of the client-facing RTSP edge, without sockets: the parser's cost is
linear in its input, and the limits, deadlines and checks each refuse what they must.

Regression tests: each one failed on the code before the hardening change it names.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.message import Request, StreamParser

# CPU bounds are generous (the machine is shared with other test runs); the quadratic
# parser took 4.9 s for FOLDED_16K and ~100 ms for the 48 KB single-field case.
CPU_BOUND = 0.05


def _folded_many_fields(total: int) -> bytes:
    """Half of the head is tiny fields, the other half whitespace continuation lines."""
    head = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n"
    fields = b"a:b\r\n" * ((total // 2 - len(head)) // 5)
    folds = b" \r\n" * ((total - len(head) - len(fields) - 2) // 3)
    return head + fields + folds + b"\r\n"


def _folded_one_field(total: int) -> bytes:
    head = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Folded: a\r\n"
    return head + b" b\r\n" * ((total - len(head) - 2) // 4) + b"\r\n"


def _cpu(fn: Callable[[], None]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _first(parser: StreamParser) -> object:
    ev = parser.next_event()
    assert ev is not None
    return ev


def test_folded_head_of_16k_parses_in_linear_time() -> None:
    # Finding 1: every continuation line rebuilt the whole header list (quadratic).
    data = _folded_many_fields(16000)
    p = StreamParser(lambda c, d: None)
    spent = _cpu(lambda: p.feed(data))
    ev = _first(p)
    assert isinstance(ev, Request) and len(ev.headers) > 1000
    assert spent < CPU_BOUND, f"{spent * 1000:.1f} ms of CPU for a 16 KB folded head"


def test_folded_head_of_48k_parses_in_linear_time() -> None:
    data = _folded_one_field(48 * 1024)
    for fields in (_folded_many_fields(48 * 1024), data):
        big = StreamParser(lambda c, d: None, max_header_bytes=64 * 1024)
        spent = _cpu(lambda: big.feed(fields))  # noqa: B023 - called at once
        assert isinstance(_first(big), Request)
        assert spent < CPU_BOUND, f"{spent * 1000:.1f} ms of CPU for a 48 KB folded head"
    # With the default 16 KB head limit it is refused, quickly too.
    p = StreamParser(lambda c, d: None)
    spent = _cpu(lambda: p.feed(data))
    ev = _first(p)
    assert isinstance(ev, ParseError) and ev.status == 413
    assert spent < CPU_BOUND


def test_folding_joins_pieces_with_one_space() -> None:
    p = StreamParser(lambda c, d: None)
    p.feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\nX-A: one\r\n two\r\n\t \r\n\tthree\r\nX-B: b\r\n\r\n")
    ev = _first(p)
    assert isinstance(ev, Request)
    assert ev.headers["X-A"] == "one two three" and ev.headers["X-B"] == "b"
    p.feed(b"OPTIONS * RTSP/1.0\r\n folded-before-any-field\r\nCSeq: 5\r\n\r\n")
    ev = _first(p)
    assert isinstance(ev, ParseError) and ev.status == 400


def test_head_and_body_trickled_are_parsed_once() -> None:
    # The head was re-scanned on every feed, and re-parsed on every feed while its
    # body was incomplete: a 1 KiB-per-feed body behind a big head cost seconds.
    head = _folded_many_fields(8000)[:-2] + b"Content-Length: 65536\r\n\r\n"
    body = b"x" * 65536
    p = StreamParser(lambda c, d: None, max_body_bytes=1 << 20)

    def trickle() -> None:
        for i in range(len(head)):
            p.feed(head[i : i + 1])
        for i in range(0, len(body), 64):
            p.feed(body[i : i + 64])

    spent = _cpu(trickle)
    ev = _first(p)
    assert isinstance(ev, Request) and ev.body == body
    assert spent < 4 * CPU_BOUND, f"{spent * 1000:.1f} ms of CPU for a trickled request"


def test_garbage_costs_little_cpu() -> None:
    p = StreamParser(lambda c, d: None)
    junk = b"\x00" * (4 << 20)
    spent = _cpu(lambda: p.feed(junk))
    assert p.garbage_bytes == len(junk)
    assert spent < 2 * CPU_BOUND, f"{spent * 1000:.1f} ms of CPU for 4 MiB of garbage"


def test_non_ascii_digits_in_content_length_and_cseq_are_refused() -> None:
    # str.isdigit() accepts '²' and '٣', which int() then raised on: an uncaught ValueError.
    p = StreamParser(lambda c, d: None)
    p.feed("OPTIONS * RTSP/1.0\r\nCSeq: ٣\r\nContent-Length: ²\r\n\r\n".encode())
    ev = _first(p)
    assert isinstance(ev, ParseError) and ev.status == 400
    p.feed("OPTIONS * RTSP/1.0\r\nCSeq: ٣\r\n\r\n".encode())
    ev = _first(p)
    assert isinstance(ev, Request) and ev.cseq is None


def test_pipelined_requests_wait_in_the_buffer_not_as_events() -> None:
    # Finding 2: the parser queues at most max_pending_events parsed messages; the
    # rest of the bytes wait, and are parsed as events are taken.
    one = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    p = StreamParser(lambda c, d: None, max_pending_events=8)
    p.feed(one * 1000)
    assert len(p._events) == 8
    assert p.buffered == len(one) * (1000 - 8)
    count = 0
    while p.next_event() is not None:
        count += 1
    assert count == 1000 and p.buffered == 0
