"""StreamParser: every message whole, byte by byte, truncated at every length, with frames
interleaved; malformed input becomes a status and the parser carries on."""

from __future__ import annotations

import pytest

from rmfproxy.rtsp.errors import ParseError
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser

DESCRIBE = (
    b"DESCRIBE rtsp://127.0.0.1:8554/lobby RTSP/1.0\r\n"
    b"CSeq: 2\r\n"
    b"Accept: application/sdp\r\n"
    b"User-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)\r\n\r\n"
)
REPLY = (
    b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://h/lobby/\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 10\r\n\r\nv=0\r\ns=x\r\n"
)
FRAME = b"$\x01\x00\x05hello"


def parse(data: bytes, chunk: int | None = None) -> tuple[list[object], list[tuple[int, bytes]]]:
    frames: list[tuple[int, bytes]] = []
    p = StreamParser(lambda ch, payload: frames.append((ch, bytes(payload))))
    events: list[object] = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        p.feed(data[i : i + step])
        while (ev := p.next_event()) is not None:
            events.append(ev)
    return events, frames


@pytest.mark.parametrize("chunk", [None, 1, 2, 7])
def test_mixed_stream_whole_and_in_pieces(chunk: int | None) -> None:
    events, frames = parse(DESCRIBE + FRAME + REPLY + FRAME, chunk)
    assert frames == [(1, b"hello"), (1, b"hello")]
    req, resp = events
    assert isinstance(req, Request) and isinstance(resp, Response)
    assert (req.method, req.uri, req.cseq) == ("DESCRIBE", "rtsp://127.0.0.1:8554/lobby", 2)
    assert req.headers["accept"] == "application/sdp"
    assert (resp.status, resp.reason, resp.cseq, resp.body) == (200, "OK", 2, b"v=0\r\ns=x\r\n")


@pytest.mark.parametrize("chunk", [None, 1, 3, 9, 64])
def test_runs_of_frames_then_a_message_whole_and_in_pieces(chunk: int | None) -> None:
    # Consecutive frames (an empty one among them, two channels) are delivered in order by
    # the frame loop, which then hands the next byte back to message parsing.
    run = [(0, bytes(range(200))), (1, b""), (0, b"$" * 40), (3, b"x")]
    wire = b"".join(b"$" + bytes([ch]) + len(p).to_bytes(2, "big") + p for ch, p in run)
    # The garbage after the second run would read as an empty frame if taken for one.
    events, frames = parse(wire + REPLY + wire + b"\n\x00\x00\x00\n" + wire, chunk)
    assert frames == run * 3
    assert [type(e) for e in events] == [Response]


def test_each_frame_is_a_fresh_buffer_for_its_receiver() -> None:
    got: list[bytearray] = []
    p = StreamParser(lambda ch, payload: got.append(payload))
    p.feed(FRAME + FRAME)
    got[0][0] = 0x78  # the receiver rewrites its packet in place
    assert [bytes(g) for g in got] == [b"xello", b"hello"]
    assert all(type(g) is bytearray for g in got)


def test_every_truncation_yields_nothing_until_complete() -> None:
    data = DESCRIBE + REPLY + FRAME
    for cut in range(len(data)):
        events, frames = parse(data[:cut])
        complete = [len(DESCRIBE), len(DESCRIBE) + len(REPLY)]
        assert len(events) == sum(1 for c in complete if cut >= c), cut
        assert frames == []


def test_roundtrip_serialize() -> None:
    (req,), _ = parse(DESCRIBE)
    assert isinstance(req, Request)
    again, _ = parse(req.serialize())
    assert again == [req]
    resp = Response(454, headers=Headers({"CSeq": "3"}), body=b"x")
    assert (
        resp.serialize()
        == b"RTSP/1.0 454 Session Not Found\r\nCSeq: 3\r\nContent-Length: 1\r\n\r\nx"
    )


def test_bare_lf_line_endings() -> None:
    (req,), _ = parse(b"OPTIONS * RTSP/1.0\nCSeq: 9\n\n")
    assert isinstance(req, Request) and req.cseq == 9


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"DESCRIBE rtsp://x RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
        (b"DESCRIBE rtsp://x\r\nCSeq: 1\r\n\r\n", 400),
        (b"DESCRIBE rtsp://x RTSP/1.0\r\nCSeq 1\r\n\r\n", 400),
        (b"DESCRIBE rtsp://x RTSP/1.0\r\nContent-Length: -4\r\n\r\n", 400),
        (b"DESCRIBE rtsp://x RTSP/1.0\r\nContent-Length: 99999999999\r\n\r\n", 400),
        (b"RTSP/1.0 2x0 OK\r\n\r\n", 400),
    ],
)
def test_malformed_gives_status_and_parser_continues(raw: bytes, status: int) -> None:
    events, frames = parse(raw + FRAME + b"OPTIONS * RTSP/1.0\r\nCSeq: 5\r\n\r\n")
    assert isinstance(events[0], ParseError) and events[0].status == status
    assert isinstance(events[-1], Request) and events[-1].cseq == 5
    assert frames == [(1, b"hello")]


def test_oversize_header_and_body_are_413_and_skipped() -> None:
    frames: list[tuple[int, bytes]] = []
    p = StreamParser(
        lambda c, d: frames.append((c, bytes(d))), max_header_bytes=256, max_body_bytes=16
    )
    p.feed(b"DESCRIBE rtsp://x RTSP/1.0\r\nX-Pad: " + b"a" * 1000 + b"\r\n\r\n")
    p.feed(b"ANNOUNCE rtsp://x RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 40\r\n\r\n" + b"$" * 40)
    p.feed(FRAME + b"OPTIONS * RTSP/1.0\r\nCSeq: 3\r\n\r\n")
    events = []
    while (ev := p.next_event()) is not None:
        events.append(ev)
    statuses = [e.status for e in events if isinstance(e, ParseError)]
    assert statuses == [413, 413]
    assert isinstance(events[-1], Request) and events[-1].cseq == 3
    assert frames == [(1, b"hello")]  # the '$' inside the skipped body is not a frame


def test_garbage_is_skipped_and_counted() -> None:
    frames: list[tuple[int, bytes]] = []
    p = StreamParser(lambda c, d: frames.append((c, bytes(d))))
    p.feed(b"\x00\xff\xfe garbage\r\n" + FRAME + b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
    ev = p.next_event()
    assert isinstance(ev, Request)
    assert frames == [(1, b"hello")]
    assert p.garbage_bytes > 0


def test_headers_case_insensitive_multi_and_redacted() -> None:
    h = Headers([("WWW-Authenticate", "Digest a"), ("www-authenticate", "Basic b")])
    assert h.get_all("WWW-AUTHENTICATE") == ["Digest a", "Basic b"]
    h["Authorization"] = "Digest secret-response"
    assert "secret-response" not in repr(h)
    with pytest.raises(ValueError):
        h["X"] = "a\r\nInjected: 1"
