"""A client that stops reading is dropped after ``stall_drop_seconds`` of the server's
clock, and its connection with it (unit: a fake transport, a fake clock, no sockets)."""

from __future__ import annotations

from typing import Any, cast

from rmfproxy.serve.close_reason import CloseReason
from rmfproxy.serve.sink import ClientSink, TcpTrack
from tests.support import FakeClock

LIMIT = 1000


class Transport:
    """Holds ``backlog`` bytes the client has not read."""

    def __init__(self) -> None:
        self.backlog = 0
        self.written = 0

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written += len(data)


def sink(clock: FakeClock, tcp: Transport, closed: list[CloseReason]) -> ClientSink:
    return ClientSink(
        tcp=cast(Any, tcp),
        udp_rtp=None,
        udp_rtcp=None,
        tracks={0: TcpTrack(0, 1)},
        limit=LIMIT,
        on_close=closed.append,
        stall_drop_seconds=10.0,
        clock=clock,
    )


def test_a_client_behind_for_longer_than_the_bound_is_dropped() -> None:
    clock, tcp, closed = FakeClock(), Transport(), []
    s = sink(clock, tcp, closed)
    tcp.backlog = 5 * LIMIT
    s.deliver_many(0, [(b"x" * 100, False)])  # behind since now
    clock.advance(9.9)
    s.deliver_many(0, [(b"x" * 100, False)])
    assert not closed and not s.closed
    clock.advance(0.2)
    s.deliver_many(0, [(b"x" * 100, False)])
    assert closed == [CloseReason.CLIENT_STALLED] and s.closed
    assert s.packets_sent == 0 and s.packets_dropped == 3
    s.close(CloseReason.TEARDOWN)  # closing again tells nobody
    assert closed == [CloseReason.CLIENT_STALLED]


def test_a_client_that_catches_up_starts_a_new_stall_period() -> None:
    clock, tcp, closed = FakeClock(), Transport(), []
    s = sink(clock, tcp, closed)
    tcp.backlog = 5 * LIMIT
    s.deliver_many(0, [(b"x" * 100, False)])
    clock.advance(9.0)
    tcp.backlog = 0  # it read everything
    s.deliver_many(0, [(b"x" * 100, False)])  # still skipping to a keyframe
    tcp.backlog = 5 * LIMIT
    clock.advance(9.0)
    s.deliver_many(0, [(b"x" * 100, False)])  # behind again: 0 s ago
    clock.advance(9.0)
    s.deliver_many(0, [(b"x" * 100, False)])
    assert not closed


def test_only_the_server_side_drops_abort_the_connection() -> None:
    # The client's player notices an aborted connection at once and reconnects; a
    # TEARDOWN or an expired session leaves the connection for its next request.
    dropping = {r for r in CloseReason if r.drops_connection}
    assert dropping == {
        CloseReason.CLIENT_STALLED,
        CloseReason.NO_SOURCE,
        CloseReason.CAMERA_REMOVED,
        CloseReason.CAMERA_CHANGED,
    }
    # Producers that pass a plain string through MediaSink.close (typed str): feed.py.
    assert CloseReason("no-source") is CloseReason.NO_SOURCE
    assert CloseReason("feed-stopped") is CloseReason.FEED_STOPPED


def test_an_access_unit_is_framed_per_packet_and_written_once_per_turn() -> None:
    # One call per access unit: a new client skips up to the keyframe's first packet, then
    # gets every packet with its own interleaved header, in one write at the turn's end.
    clock, closed = FakeClock(), []
    frames: list[bytes] = []
    tcp = Transport()
    tcp.write = frames.append  # type: ignore[method-assign]
    s = sink(clock, tcp, closed)
    s._loop = cast(Any, type("Loop", (), {"call_soon": lambda self, f: None})())
    s.deliver_many(0, [(b"a" * 10, False), (b"K" * 20, True), (b"b" * 30, False)])
    assert frames == [] and s.packets_dropped == 1 and s.packets_sent == 2
    s._flush()
    assert frames == [b"$\x00\x00\x14" + b"K" * 20 + b"$\x00\x00\x1e" + b"b" * 30]
    assert s.bytes_sent == 50


def test_a_client_falling_behind_inside_an_access_unit_skips_its_rest() -> None:
    clock, tcp, closed = FakeClock(), Transport(), []
    s = sink(clock, tcp, closed)
    s._loop = cast(Any, type("Loop", (), {"call_soon": lambda self, f: None})())
    s.deliver_many(0, [(b"K" * 10, True)])
    sizes = iter([0])  # room for the first packet, then the client is behind
    tcp.get_write_buffer_size = lambda: next(sizes, 2 * LIMIT)  # type: ignore[method-assign]
    s.deliver_many(0, [(b"a" * 10, False), (b"b" * 10, False), (b"c" * 10, False)])
    assert s.packets_sent == 2 and s.packets_dropped == 2 and s.skips == 1 and s.skipping
