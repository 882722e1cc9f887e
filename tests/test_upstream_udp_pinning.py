"""UDP sources believe only the recorder's announced (or first-seen) address and port.

Regression tests for the hardening issue: RTP sent to a source's UDP ports from the
recorder's IP but another port was delivered into the stream, and a spoofed RTCP BYE from
that IP made the source reconnect 30 times in 15 s. Now RTP/RTCP is accepted only from the
pair in the SETUP reply's ``server_port`` (or the first seen after PLAY when none was
announced), and a BYE only when it also names the track's SSRC.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import structlog

from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp import rtcp
from rmfproxy.rtsp.headers import TransportSpec
from rmfproxy.rtsp.message import Request, Response
from rmfproxy.upstream.backoff import Backoff
from rmfproxy.upstream.source import RtspSource
from rmfproxy.upstream.udp_pin import UdpPin, Verdict
from tests.test_upstream_source import FakeRecorder, Listener, running, until
from tests.test_upstream_source import serve as serve_any_ports

SSRC = 0xABCD
QUIET = 0.15
"""How long a test waits to see that nothing happens (a loss, a delivery)."""


def video(seq: int, ssrc: int = SSRC, payload: bytes = b"\x65data") -> bytes:
    return rtp.build(96, seq, 9000 * seq, ssrc, payload)


@contextlib.asynccontextmanager
async def serve(rec: FakeRecorder) -> AsyncIterator[str]:
    """The fake recorder with its media on an even/odd port pair (RFC 3550 §11), as real
    recorders announce it in ``server_port``."""
    loop = asyncio.get_running_loop()
    async with serve_any_ports(rec) as url:
        replaced = rec.udp_rtp, rec.udp_rtcp
        for _ in range(64):
            rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp_sock.bind(("127.0.0.1", 0))
                port = rtp_sock.getsockname()[1]
                if port % 2 or port == 65534:
                    raise OSError("odd port")
                rtcp_sock.bind(("127.0.0.1", port + 1))
            except OSError:
                rtp_sock.close()
                rtcp_sock.close()
                continue
            break
        else:
            raise RuntimeError("no even/odd UDP port pair on 127.0.0.1 in 64 tries")
        rec.udp_rtp, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, sock=rtp_sock
        )
        rec.udp_rtcp, _ = await loop.create_datagram_endpoint(
            lambda: rec.udp_rtcp_peer, sock=rtcp_sock
        )
        for t in replaced:
            if t is not None:
                t.close()
        yield url  # serve_any_ports closes the pair


@contextlib.asynccontextmanager
async def udp_sockets(count: int) -> AsyncIterator[list[asyncio.DatagramTransport]]:
    """Extra senders on 127.0.0.1, each on its own port: the spoofers."""
    loop = asyncio.get_running_loop()
    out = []
    try:
        for _ in range(count):
            t, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
            )
            out.append(t)
        yield out
    finally:
        for t in out:
            t.close()


class UnannouncedRecorder(FakeRecorder):
    """A recorder whose SETUP reply names no server_port (it sends from any port)."""

    def reply(self, req: Request) -> Response:
        resp = super().reply(req)
        if req.method == "SETUP":
            spec = TransportSpec.parse(resp.headers.get("Transport") or "")
            spec.server_port = None
            resp.headers["Transport"] = spec.serialize()
        return resp


class SsrcRecorder(FakeRecorder):
    """A recorder that announces its SSRC in the SETUP reply (Transport ``ssrc=``)."""

    def reply(self, req: Request) -> Response:
        resp = super().reply(req)
        if req.method == "SETUP":
            resp.headers["Transport"] = (resp.headers.get("Transport") or "") + f";ssrc={SSRC:08X}"
        return resp


def delivered(listener: Listener, track: int, is_rtcp: bool = False) -> list[bytes]:
    return [d for t, c, d in listener.packets if t == track and c == is_rtcp]


def udp_source(url: str) -> tuple[RtspSource, Listener]:
    listener = Listener()
    source = RtspSource(url, listener, transport="udp", backoff=Backoff(5, 5))
    return source, listener


# spoofed RTP ------------------------------------------------------------------------------


async def test_rtp_from_another_port_of_the_recorder_host_is_not_delivered() -> None:
    rec = FakeRecorder()
    async with serve(rec) as url, udp_sockets(1) as (spoofer,):
        source, listener = udp_source(url)
        async with running(source):
            await until(lambda: listener.connected)
            assert rec.udp_rtp is not None
            rtp_port = rec.udp_clients[0][0]
            spoof = video(1, payload=b"\x65SPOOF")
            spoofer.sendto(spoof, ("127.0.0.1", rtp_port))
            rec.udp_rtp.sendto(video(2), ("127.0.0.1", rtp_port))
            await until(lambda: video(2) in delivered(listener, 0))
            await until(lambda: spoof in delivered(listener, 0) or source.stats.rejected_packets)
            await asyncio.sleep(0.02)
    assert delivered(listener, 0) == [video(2)]
    assert source.stats.rejected_packets == 1
    assert not listener.lost


async def test_rtcp_from_the_rtp_port_is_not_delivered_as_rtcp() -> None:
    # The announced pair is (rtp, rtcp): RTCP must come from the second port only.
    rec = FakeRecorder()
    async with serve(rec) as url:
        source, listener = udp_source(url)
        async with running(source):
            await until(lambda: listener.connected)
            assert rec.udp_rtp is not None and rec.udp_rtcp is not None
            rtcp_port = rec.udp_clients[0][1]
            wrong = rtcp.build_sender_report(SSRC, 1, 2, 3, 4)
            right = rtcp.build_sender_report(SSRC, 5, 6, 7, 8)
            rec.udp_rtp.sendto(wrong, ("127.0.0.1", rtcp_port))
            rec.udp_rtcp.sendto(right, ("127.0.0.1", rtcp_port))
            await until(lambda: right in delivered(listener, 0, True))
            await until(lambda: source.stats.rejected_packets or len(listener.packets) > 1)
    assert delivered(listener, 0, True) == [right]


# spoofed BYE ------------------------------------------------------------------------------


async def test_bye_from_another_port_is_ignored_the_recorders_bye_is_not() -> None:
    rec = FakeRecorder()
    async with serve(rec) as url, udp_sockets(1) as (spoofer,):
        source, listener = udp_source(url)
        async with running(source):
            await until(lambda: listener.connected)
            assert rec.udp_rtp is not None and rec.udp_rtcp is not None
            rtp_port, rtcp_port = rec.udp_clients[0]
            rec.udp_rtp.sendto(video(1), ("127.0.0.1", rtp_port))
            await until(lambda: delivered(listener, 0))
            # The right SSRC, the recorder's IP, but not its RTCP port: 30 of these made
            # the source reconnect 30 times.
            bye = rtcp.build_receiver_report(SSRC) + rtcp.build_bye([SSRC])
            for _ in range(30):
                spoofer.sendto(bye, ("127.0.0.1", rtcp_port))
            await until(lambda: source.stats.rejected_packets >= 30 or listener.lost)
            await asyncio.sleep(QUIET)
            assert not listener.lost
            assert source.stats.sessions == 1 and source.stats.reconnects == 0
            # Still streaming.
            rec.udp_rtp.sendto(video(2), ("127.0.0.1", rtp_port))
            await until(lambda: video(2) in delivered(listener, 0))
            # The recorder's own BYE still ends the session.
            rec.udp_rtcp.sendto(bye, ("127.0.0.1", rtcp_port))
            await until(lambda: listener.lost)
    assert listener.lost == ["rtcp-bye"]
    assert source.stats.rejected_packets == 30


async def test_bye_from_the_recorders_port_with_a_foreign_ssrc_is_ignored() -> None:
    rec = FakeRecorder()
    async with serve(rec) as url:
        source, listener = udp_source(url)
        async with running(source):
            await until(lambda: listener.connected)
            assert rec.udp_rtp is not None and rec.udp_rtcp is not None
            rtp_port, rtcp_port = rec.udp_clients[0]
            rec.udp_rtp.sendto(video(1), ("127.0.0.1", rtp_port))
            await until(lambda: delivered(listener, 0))
            rec.udp_rtcp.sendto(rtcp.build_bye([0x1234]), ("127.0.0.1", rtcp_port))
            await until(lambda: source.stats.rejected_packets or listener.lost)
            await asyncio.sleep(QUIET)
            assert not listener.lost
            rec.udp_rtcp.sendto(rtcp.build_bye([0x1234, SSRC]), ("127.0.0.1", rtcp_port))
            await until(lambda: listener.lost)
    assert listener.lost == ["rtcp-bye"]
    assert source.stats.rejected_packets == 1


async def test_bye_naming_the_announced_ssrc_is_believed_before_any_rtp() -> None:
    rec = SsrcRecorder()
    async with serve(rec) as url:
        source, listener = udp_source(url)
        async with running(source):
            await until(lambda: listener.connected)
            assert rec.udp_rtcp is not None
            rtcp_port = rec.udp_clients[0][1]
            rec.udp_rtcp.sendto(rtcp.build_bye([SSRC]), ("127.0.0.1", rtcp_port))
            await until(lambda: listener.lost)
    assert listener.lost == ["rtcp-bye"]


async def test_bye_is_not_believed_while_no_ssrc_is_known() -> None:
    rec = FakeRecorder()
    async with serve(rec) as url:
        source, listener = udp_source(url)
        async with running(source):
            await until(lambda: listener.connected)
            assert rec.udp_rtcp is not None
            rtcp_port = rec.udp_clients[0][1]
            rec.udp_rtcp.sendto(rtcp.build_bye([SSRC]), ("127.0.0.1", rtcp_port))
            await until(lambda: source.stats.rejected_packets or listener.lost)
            await asyncio.sleep(QUIET)
    assert not listener.lost


# no server_port announced ------------------------------------------------------------------


async def test_without_server_port_the_first_sender_after_play_is_pinned() -> None:
    rec = UnannouncedRecorder()
    async with serve(rec) as url, udp_sockets(4) as (media, other, control, spoofer):
        source, listener = udp_source(url)
        async with running(source):
            await until(lambda: listener.connected)
            rtp_port, rtcp_port = rec.udp_clients[0]
            media.sendto(video(1), ("127.0.0.1", rtp_port))
            await until(lambda: delivered(listener, 0))
            other.sendto(video(2, payload=b"\x65SPOOF"), ("127.0.0.1", rtp_port))
            media.sendto(video(3), ("127.0.0.1", rtp_port))
            await until(lambda: video(3) in delivered(listener, 0))
            await until(lambda: source.stats.rejected_packets or len(delivered(listener, 0)) > 2)
            assert delivered(listener, 0) == [video(1), video(3)]
            control.sendto(rtcp.build_sender_report(SSRC, 1, 2, 3, 4), ("127.0.0.1", rtcp_port))
            await until(lambda: delivered(listener, 0, True))
            spoofer.sendto(rtcp.build_bye([SSRC]), ("127.0.0.1", rtcp_port))
            await until(lambda: source.stats.rejected_packets >= 2 or listener.lost)
            await asyncio.sleep(QUIET)
            assert not listener.lost
            control.sendto(rtcp.build_bye([SSRC]), ("127.0.0.1", rtcp_port))
            await until(lambda: listener.lost)
    assert listener.lost == ["rtcp-bye"]
    assert source.stats.rejected_packets == 2


# logging ------------------------------------------------------------------------------------


async def test_rejections_are_counted_and_logged_once_per_interval() -> None:
    rec = FakeRecorder()
    with structlog.testing.capture_logs() as logs:
        async with serve(rec) as url, udp_sockets(1) as (spoofer,):
            source, listener = udp_source(url)
            async with running(source):
                await until(lambda: listener.connected)
                rtp_port = rec.udp_clients[0][0]
                for i in range(50):
                    spoofer.sendto(video(i), ("127.0.0.1", rtp_port))
                await until(lambda: source.stats.rejected_packets >= 50 or listener.packets)
                await asyncio.sleep(0.02)
    assert source.stats.rejected_packets == 50
    assert not delivered(listener, 0)
    lines = [e for e in logs if e["event"] == "upstream.udp_rejected"]
    assert len(lines) == 1
    assert lines[0]["count"] == 1 and lines[0]["reason"] == "foreign-sender"
    assert lines[0]["sender"].startswith("127.0.0.1:")


# the pin itself, without sockets ----------------------------------------------------------


def test_pin_verdicts() -> None:
    pin = UdpPin("10.0.0.5", 6970, 6971)
    assert pin.check("10.0.0.5", 6970, False, video(1)) is Verdict.ACCEPT
    assert pin.rtp_ssrc == SSRC
    assert pin.check("10.0.0.5", 6972, False, video(1)) is Verdict.FOREIGN_SENDER
    assert pin.check("10.0.0.6", 6970, False, video(1)) is Verdict.FOREIGN_SENDER
    assert pin.check("10.0.0.5", 6971, False, video(1)) is Verdict.FOREIGN_SENDER
    assert pin.check("10.0.0.5", 6970, True, rtcp.build_bye([SSRC])) is Verdict.FOREIGN_SENDER
    assert pin.check("10.0.0.5", 6971, True, rtcp.build_bye([7])) is Verdict.FOREIGN_BYE
    assert pin.check("10.0.0.5", 6971, True, rtcp.build_bye([SSRC])) is Verdict.ACCEPT
    # A malformed compound with a BYE type byte is not a believable BYE.
    assert pin.check("10.0.0.5", 6971, True, b"\x81\xcb\x00\x05" + b"\0" * 4) is (
        Verdict.FOREIGN_BYE
    )


def test_pin_learns_unannounced_ports_only_after_play_and_from_media() -> None:
    pin = UdpPin("10.0.0.5")
    assert pin.check("10.0.0.5", 5000, False, video(1)) is Verdict.FOREIGN_SENDER  # before PLAY
    pin.arm()
    assert pin.check("10.0.0.5", 5000, False, b"probe") is Verdict.FOREIGN_SENDER
    assert pin.rtp_port is None
    assert pin.check("10.0.0.6", 5000, False, video(1)) is Verdict.FOREIGN_SENDER
    assert pin.check("10.0.0.5", 5000, False, video(1)) is Verdict.ACCEPT
    assert pin.check("10.0.0.5", 5002, False, video(2)) is Verdict.FOREIGN_SENDER
    assert (pin.rtp_port, pin.rtcp_port) == (5000, None)
    sr = rtcp.build_sender_report(SSRC, 1, 2, 3, 4)
    assert pin.check("10.0.0.5", 5001, True, sr) is Verdict.ACCEPT
    assert pin.check("10.0.0.5", 5003, True, sr) is Verdict.FOREIGN_SENDER


def test_pin_believes_the_announced_or_the_seen_ssrc() -> None:
    pin = UdpPin("h", 1, 2, announced_ssrc=0x1111)
    assert pin.check("h", 2, True, rtcp.build_bye([0x2222])) is Verdict.FOREIGN_BYE
    assert pin.check("h", 1, False, video(1, ssrc=0x2222)) is Verdict.ACCEPT
    assert pin.check("h", 2, True, rtcp.build_bye([0x2222])) is Verdict.ACCEPT
    assert pin.check("h", 2, True, rtcp.build_bye([0x1111])) is Verdict.ACCEPT
    assert pin.check("h", 2, True, rtcp.build_bye([0x3333])) is Verdict.FOREIGN_BYE
