"""The WAN impairment relay (rmfproxy.sim.wan): delay, bandwidth, TCP stalls, UDP loss,
RTSP over TCP and UDP through it read by FFmpeg, and a close passed on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time

import pytest

from rmfproxy.rtsp.headers import TransportSpec
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.sim.impair import Flow, Impairment, Shaper
from rmfproxy.sim.probe import read_rtsp
from rmfproxy.sim.runner import SimCluster, SimSpec
from rmfproxy.sim.wan import WanLink
from rmfproxy.sim.wan_udp import RtspTap, bind_pair
from tests.support import LoopStalls

# --- no I/O -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"delay": -0.1}, "delay"),
        ({"jitter": float("nan")}, "jitter"),
        ({"bandwidth_bps": 0}, "bandwidth_bps"),
        ({"udp_loss": 1.5}, "udp_loss"),
        ({"stall_every": 0}, "stall_every"),
        ({"stall_every": 1.0, "stall_for": 1.0}, "stall_for"),
    ],
)
def test_impairment_names_the_bad_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"Impairment.{field} "):
        Impairment(**kwargs)


def test_udp_loss_fraction_is_near_the_configured_one() -> None:
    shaper = Shaper(Impairment(udp_loss=0.01, seed=7), epoch=0.0)
    flow = Flow()
    n = 50_000
    kept = sum(shaper.schedule(flow, i * 0.001, 1200, datagram=True) is not None for i in range(n))
    assert shaper.stats.dropped == n - kept
    assert 0.008 <= shaper.stats.dropped / n <= 0.012

    # The same seed drops the same datagrams.
    def drops(seed: int) -> list[bool]:
        sh = Shaper(Impairment(udp_loss=0.01, seed=seed), epoch=0.0)
        return [sh.schedule(Flow(), 0.0, 1, datagram=True) is None for _ in range(2000)]

    assert drops(7) == drops(7) != drops(8)


def test_jitter_never_reorders_a_flow_and_stalls_hold_tcp_only() -> None:
    imp = Impairment(delay=0.04, jitter=0.02, stall_every=1.0, stall_for=0.3, stall_phase=0.5)
    shaper = Shaper(imp, epoch=100.0)
    flow = Flow()
    times = [shaper.schedule(flow, 100.0 + i * 0.005, 100, datagram=False) for i in range(400)]
    assert all(t is not None for t in times)
    ts = [t for t in times if t is not None]
    assert ts == sorted(ts)
    # Nothing is delivered inside a stall window [100.5, 100.8) or [101.5, 101.8).
    assert not [t for t in ts if 100.5 <= t < 100.8 or 101.5 <= t < 101.8]
    assert shaper.stats.stalls == 2
    # A datagram due inside a stall is not held.
    t = shaper.schedule(Flow(), 102.5, 100, datagram=True)
    assert t is not None and t < 102.5 + 0.07


def _message_bytes() -> tuple[bytes, bytes, bytes]:
    """A client's byte stream: an odd OPTIONS, an RTCP frame, garbage, a UDP SETUP, PLAY."""
    options = b"OPTIONS rtsp://h/cam RTSP/1.0\r\ncseq:   1 \r\nX-Odd:\tkeep  me\r\n\r\n"
    frame = b"$\x01\x00\x08" + b"\x81\xc9\x00\x01RTSP"
    garbage = b"\x00\xffjunk\n"
    setup = (
        b"SETUP rtsp://h/cam/trackID=0 RTSP/1.0\r\nCSeq: 2\r\n"
        b"Transport: RTP/AVP;unicast;client_port=5000-5001\r\nUser-Agent: t\r\n\r\n"
    )
    play = b"PLAY rtsp://h/cam RTSP/1.0\n" + b"CSeq: 3\nSession: 1\n\n"
    return options + frame + garbage, setup, play


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
async def test_tap_forwards_every_byte_as_it_came_but_the_rewritten_setup(chunk: int) -> None:
    before, setup, after = _message_bytes()
    seen: list[str] = []

    async def handler(msg: Request | Response) -> bytes | None:
        assert isinstance(msg, Request)
        seen.append(msg.method)
        if msg.method != "SETUP":
            return None
        return b"<setup rewritten>"

    tap = RtspTap(handler)
    stream = before + setup + after
    out = b""
    for i in range(0, len(stream), chunk):
        out += b"".join(await tap.feed(stream[i : i + chunk]))
    out += tap.rest()
    assert out == before + b"<setup rewritten>" + after
    assert seen == ["OPTIONS", "SETUP", "PLAY"]


# --- sockets ------------------------------------------------------------------------------


async def _echo_server() -> asyncio.Server:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def test_round_trip_time_is_the_configured_one() -> None:
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    imp = Impairment(delay=0.04, jitter=0.01, seed=1)
    async with server, WanLink("127.0.0.1", port, imp) as link, LoopStalls() as stalls:
        r, w = await asyncio.open_connection("127.0.0.1", link.port)
        rtts = []
        for i in range(8):
            # RTSP-shaped: the relay holds a message head until its empty line has come.
            ping = b"OPTIONS * RTSP/1.0\r\nCSeq: %d\r\n\r\n" % i
            t0 = time.monotonic()
            w.write(ping)
            assert await asyncio.wait_for(r.readexactly(len(ping)), 5) == ping
            rtts.append(time.monotonic() - t0)
        w.close()
    rtts.sort()
    # Each way 40 ms ± 10 ms: the RTT is at least 60 ms, near 80 ms in the median.
    assert rtts[0] >= 0.06
    assert 0.07 <= rtts[len(rtts) // 2] <= 0.11 + stalls.longest
    assert link.stats.connections == 1 and link.stats.up.bytes == link.stats.down.bytes


async def test_bandwidth_cap_holds() -> None:
    received: list[tuple[float, int]] = []
    done = asyncio.Event()

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            received.append((time.monotonic(), len(data)))
        done.set()
        w.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cap = 2_000_000  # bit/s
    total = 300_000  # bytes: 1.2 s at the cap
    async with server, WanLink("127.0.0.1", port, Impairment(bandwidth_bps=cap)) as link:
        _, w = await asyncio.open_connection("127.0.0.1", link.port)
        w.write(bytes(total))  # all at once: the link, not the sender, sets the pace
        await w.drain()
        w.close()
        await asyncio.wait_for(done.wait(), 10)
    assert sum(n for _, n in received) == total
    # From the first chunk's arrival to the last: the rest of the bytes at the cap.
    seconds = received[-1][0] - received[0][0]
    rate = (total - received[0][1]) * 8 / seconds
    assert cap * 0.75 <= rate <= cap * 1.05, rate


async def test_tcp_stall_holds_the_bytes_then_releases_them_in_order() -> None:
    got: list[tuple[float, int]] = []
    done = asyncio.Event()

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        buf = b""
        while data := await r.read(65536):
            buf += data
            now = time.monotonic()
            while len(buf) >= 4:
                got.append((now, struct.unpack(">I", buf[:4])[0]))
                buf = buf[4:]
        done.set()
        w.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    imp = Impairment(delay=0.01, stall_every=5.0, stall_for=0.3, stall_phase=0.6)
    async with server, WanLink("127.0.0.1", port, imp) as link, LoopStalls() as stalls:
        t_start = time.monotonic()
        _, w = await asyncio.open_connection("127.0.0.1", link.port)
        for i in range(150):  # 1.5 s or more at 100 Hz: one stall at 0.6-0.9 s
            w.write(struct.pack(">I", i))
            await asyncio.sleep(0.01)
        w.close()
        await asyncio.wait_for(done.wait(), 10)
    assert [c for _, c in got] == list(range(150))  # nothing lost, in order
    gaps = [(b[0] - a[0], a[0]) for a, b in itertools.pairwise(got)]
    longest, since = max(gaps)
    assert 0.2 <= longest <= 0.4 + stalls.longest
    assert 0.5 <= since - t_start <= 0.65 + stalls.longest  # the stall began at 0.6 s
    assert link.stats.up.stalls == 1
    # Outside the stall the bytes flowed: no other gap near its length.
    assert sorted(g for g, _ in gaps)[-2] < 0.15 + stalls.longest


async def _fake_udp_recorder(
    n: int,
) -> tuple[asyncio.Server, socket.socket, socket.socket, list[TransportSpec]]:
    """An RTSP server answering one SETUP with server_port, then sending ``n`` datagrams
    to the client_port it was given (and counting what comes back to its RTCP port)."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp.bind(("127.0.0.1", 0))
    offers: list[TransportSpec] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        parser = StreamParser(lambda ch, p: None)
        while data := await r.read(65536):
            parser.feed(data)
            while (ev := parser.next_event()) is not None:
                assert isinstance(ev, Request)
                offer = TransportSpec.parse(ev.headers["Transport"])
                offers.append(offer)
                assert offer.client_port is not None
                reply = TransportSpec(
                    client_port=offer.client_port,
                    server_port=(rtp.getsockname()[1], rtcp.getsockname()[1]),
                )
                h = Headers({"CSeq": ev.headers["CSeq"], "Transport": reply.serialize()})
                h["Session"] = "abc;timeout=60"
                w.write(Response(200, "OK", h).serialize())
                await w.drain()
                await asyncio.sleep(0.05)
                for i in range(n):
                    rtp.sendto(struct.pack(">I", i), ("127.0.0.1", offer.client_port[0]))
                    if i % 50 == 49:
                        await asyncio.sleep(0.002)  # let the relay keep up
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, rtp, rtcp, offers


async def test_udp_setup_is_rewritten_and_datagrams_cross_with_the_configured_loss() -> None:
    n = 3000
    server, rtp, rtcp, offers = await _fake_udp_recorder(n)
    port = server.sockets[0].getsockname()[1]
    mine_rtp, mine_rtcp = bind_pair(socket.AF_INET, "127.0.0.1")
    mine = (mine_rtp.getsockname()[1], mine_rtcp.getsockname()[1])
    loop = asyncio.get_running_loop()
    got: list[int] = []
    arrived = asyncio.Event()

    class Rx(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.append(struct.unpack(">I", data)[0])
            if got[-1] == n - 1:
                arrived.set()

    t_rx, _ = await loop.create_datagram_endpoint(Rx, sock=mine_rtp)
    imp = Impairment(delay=0.005, udp_loss=0.1, seed=3)
    async with server, WanLink("127.0.0.1", port, imp) as link:
        r, w = await asyncio.open_connection("127.0.0.1", link.port)
        setup = Request(
            "SETUP",
            "rtsp://x/cam",
            Headers({"CSeq": "5", "Transport": f"RTP/AVP;unicast;client_port={mine[0]}-{mine[1]}"}),
        )
        w.write(setup.serialize())
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        reply = TransportSpec.parse(
            next(ln for ln in head.decode().split("\r\n") if ln.startswith("Transport:"))
            .split(":", 1)[1]
            .strip()
        )
        # The server saw the relay's ports; the client its own and the relay's.
        assert offers[0].client_port != mine
        assert reply.client_port == mine
        assert reply.server_port not in (None, (rtp.getsockname()[1], rtcp.getsockname()[1]))
        # RTCP from the client reaches the server's RTCP port through the relay.
        assert reply.server_port is not None
        mine_rtcp.sendto(b"rr", ("127.0.0.1", reply.server_port[1]))
        rtcp.settimeout(2)
        assert (await asyncio.to_thread(rtcp.recvfrom, 100))[0] == b"rr"
        # Until the last datagram (or, if it was the one lost, until nothing more comes).
        count = -1
        while count != len(got) and not arrived.is_set():
            count = len(got)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 0.5)
        w.close()
    t_rx.close()
    for s in (rtp, rtcp, mine_rtcp):
        s.close()
    assert got == sorted(got) and len(set(got)) == len(got)
    lost = n - len(got)
    assert link.stats.down.dropped == lost
    assert 0.07 <= lost / n <= 0.13
    assert link.stats.udp_pairs == 1 and link.stats.down.datagrams == len(got)


async def _read_both(urls: list[tuple[str, str]], seconds: float) -> list[object]:
    return list(
        await asyncio.gather(
            *(
                asyncio.to_thread(read_rtsp, url, transport=t, seconds=seconds)  # type: ignore[arg-type]
                for url, t in urls
            )
        )
    )


@pytest.mark.asyncio(loop_factories=["uvloop"])  # e2e-sized: the production loop
async def test_rtsp_through_the_link_over_tcp_and_udp_read_by_ffmpeg() -> None:
    imp = Impairment(delay=0.02, jitter=0.005, seed=5)
    spec = SimSpec(recorders=[("r1", 0)], cameras=["cam"], seconds=2.0, impairment=imp)
    async with SimCluster(spec) as sim:
        url = sim.url("r1", "cam")
        assert url != sim.recorders["r1"].url("cam")  # the link's, not the recorder's
        assert sim.port("r1") == sim.links["r1"].port
        tcp, udp = await _read_both([(url, "tcp"), (url, "udp")], seconds=2.5)
        stats = sim.links["r1"].stats
    for r in (tcp, udp):
        assert r.error is None, r.error  # type: ignore[attr-defined]
        assert r.decode_errors == 0  # type: ignore[attr-defined]
        assert r.frames_decoded >= 30  # type: ignore[attr-defined]
        # Every frame once, none lost: jitter never reorders and nothing was dropped.
        assert r.consecutive(), r.counters  # type: ignore[attr-defined]
    # FFmpeg sends RTCP (and its NAT punches) back through the link too.
    assert stats.udp_pairs == 1 and stats.down.datagrams > 50 and stats.up.datagrams > 0
    assert stats.connections == 2


async def test_a_recorder_closed_behind_the_link_is_seen_closed() -> None:
    imp = Impairment(delay=0.05)
    spec = SimSpec(recorders=[("r1", 0)], cameras=["cam"], seconds=1.0, impairment=imp)
    async with SimCluster(spec) as sim, LoopStalls() as stalls:
        r, w = await asyncio.open_connection("127.0.0.1", sim.port("r1"))
        w.write(b"OPTIONS rtsp://x/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)).startswith(b"RTSP/1.0 200")
        t0 = time.monotonic()
        sim.recorders["r1"].close_connections()
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(r.read(), 5) == b""
        took = time.monotonic() - t0
        w.close()
        # The close crossed the link after its one-way delay, not later.
        assert 0.045 <= took <= 0.25 + stalls.longest
        await asyncio.sleep(0.05)
        assert not sim.links["r1"]._conns  # the connection is gone from the link too
