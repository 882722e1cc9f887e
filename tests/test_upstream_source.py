"""The upstream client against a scripted recorder on loopback.

One session for all tracks, server-chosen channels, Digest with and without qop, Basic,
credentials from the URL or from arguments (never leaked), keepalives, every loss reason,
reconnect, prompt cancellation, TEARDOWN on close, receiver reports, UDP transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import structlog

from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp import rtcp
from rmfproxy.rtsp.auth import DigestServer, basic_authorization
from rmfproxy.rtsp.headers import TransportSpec
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.upstream.backoff import Backoff
from rmfproxy.upstream.loss import LossReason
from rmfproxy.upstream.source import RtspSource

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\na=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
    "m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=1\r\n"
)
USER = "cam"
PASSWORD = "pw-Zx81-secret"
ALL_METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"
RTCP_RR = 201


def frame(channel: int, payload: bytes) -> bytes:
    """An interleaved frame (RFC 2326 §10.12)."""
    return struct.pack(">cBH", b"$", channel, len(payload)) + payload


class _UdpPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))


@dataclass
class FakeRecorder:
    """Answers OPTIONS/DESCRIBE/SETUP/PLAY/GET_PARAMETER/TEARDOWN with canned replies.

    The media burst goes out in the same write as the PLAY reply, as real servers do.
    """

    auth: Literal["none", "digest", "digest-no-qop", "basic"] = "none"
    public: str = ALL_METHODS
    options_status: int = 200
    describe_status: int = 200
    content_base: bool = True
    timeout: int = 60
    silent: bool = False
    """Accept TCP, read requests, never answer."""
    mute_after_play: bool = False
    """Stop answering once PLAY has been answered."""
    channel_offset: int = 0
    """Interleaved channels the server picks instead of the ones asked for."""
    digest: DigestServer = field(default_factory=lambda: DigestServer("rec", b"k"))
    requests: list[tuple[int, Request]] = field(default_factory=list)
    frames_in: list[tuple[int, bytes]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    connections: int = 0
    played: bool = False
    channels: dict[int, tuple[int, int]] = field(default_factory=dict)
    udp_clients: dict[int, tuple[int, int]] = field(default_factory=dict)
    udp_rtp: asyncio.DatagramTransport | None = None
    udp_rtcp: asyncio.DatagramTransport | None = None
    udp_rtcp_peer: _UdpPeer = field(default_factory=_UdpPeer)

    def methods(self) -> list[str]:
        return [r.method for _, r in self.requests]

    def first(self, method: str) -> Request:
        return next(r for _, r in self.requests if r.method == method)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        parser = StreamParser(lambda ch, data: self.frames_in.append((ch, bytes(data))))
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (ev := parser.next_event()) is not None:
                    if not isinstance(ev, Request):
                        continue
                    self.requests.append((number, ev))
                    if self.silent or (self.mute_after_play and self.played):
                        continue
                    resp = self.reply(ev)
                    out = resp.serialize()
                    if ev.method == "PLAY" and resp.status == 200:
                        self.played = True
                        out += self.media()
                    writer.write(out)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def authorized(self, req: Request) -> bool:
        value = req.headers.get("Authorization")
        if self.auth == "none":
            return True
        if value is None:
            return False
        if self.auth == "basic":
            return value == basic_authorization(USER, PASSWORD)
        return self.digest.verify(value, req.method, {USER: PASSWORD}.get).user == USER

    def reply(self, req: Request) -> Response:
        h = Headers({"CSeq": req.headers.get("CSeq") or "0"})
        if not self.authorized(req):
            if self.auth == "basic":
                h["WWW-Authenticate"] = 'Basic realm="rec"'
            else:
                challenge = self.digest.challenge()
                if self.auth == "digest-no-qop":
                    challenge = challenge.replace(', qop="auth"', "")
                h["WWW-Authenticate"] = challenge
            return Response(401, headers=h)
        if req.method == "OPTIONS":
            h["Public"] = self.public
            return Response(self.options_status, headers=h)
        if req.method == "DESCRIBE":
            if self.describe_status != 200:
                return Response(self.describe_status, headers=h)
            if self.content_base:
                h["Content-Base"] = req.uri + "/"
            return Response(200, headers=h, body=SDP.encode())
        if req.method == "SETUP":
            spec = TransportSpec.parse(req.headers.get("Transport") or "")
            track = int(req.uri.rsplit("=", 1)[1])
            if spec.interleaved is not None:
                off = self.channel_offset
                spec.interleaved = (spec.interleaved[0] + off, spec.interleaved[1] + off)
                self.channels[track] = spec.interleaved
            if spec.client_port is not None:
                assert self.udp_rtp is not None and self.udp_rtcp is not None
                self.udp_clients[track] = spec.client_port
                spec.server_port = (
                    self.udp_rtp.get_extra_info("sockname")[1],
                    self.udp_rtcp.get_extra_info("sockname")[1],
                )
            h["Transport"] = spec.serialize()
            h["Session"] = f"SESS1;timeout={self.timeout}"
        return Response(200, headers=h)

    def media(self) -> bytes:
        if not self.channels:
            return b""
        video_rtp, video_rtcp = self.channels[0]
        out = b"".join(
            frame(video_rtp, rtp.build(96, 100 + i, 9000 * i, 0xABCD, b"\x65data"))
            for i in range(5)
        )
        out += frame(self.channels[1][0], rtp.build(8, 1, 0, 0xABCE, b"\xd5" * 160))
        return out + frame(video_rtcp, rtcp.build_sender_report(0xABCD, 1, 2, 3, 4))

    def send(self, data: bytes) -> None:
        self.writers[-1].write(data)

    def rtcp_in(self) -> list[tuple[int, bytes]]:
        return [(ch, d) for ch, d in self.frames_in if ch % 2 == 1]


@contextlib.asynccontextmanager
async def serve(rec: FakeRecorder) -> AsyncIterator[str]:
    """The recorder on 127.0.0.1, port 0; yields the camera URL."""
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    rec.udp_rtp, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    rec.udp_rtcp, _ = await loop.create_datagram_endpoint(
        lambda: rec.udp_rtcp_peer, local_addr=("127.0.0.1", 0)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        server.close()
        for w in rec.writers:
            w.close()
        for t in rec.tasks:
            t.cancel()
        await asyncio.gather(*rec.tasks, return_exceptions=True)
        await server.wait_closed()
        rec.udp_rtp.close()
        rec.udp_rtcp.close()


class Listener:
    """Records the callbacks in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_connected(self, sdp: SessionDescription) -> None:
        self.events.append(("connected", sdp))

    def on_packet(self, track: int, rtcp: bool, data: bytearray) -> None:
        self.events.append(("packet", (track, rtcp, bytes(data))))

    def on_lost(self, reason: str) -> None:
        self.events.append(("lost", reason))

    @property
    def packets(self) -> list[tuple[int, bool, bytes]]:
        return [e[1] for e in self.events if e[0] == "packet"]

    @property
    def lost(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "lost"]

    @property
    def connected(self) -> list[SessionDescription]:
        return [e[1] for e in self.events if e[0] == "connected"]


@contextlib.asynccontextmanager
async def running(source: RtspSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(cond: Callable[[], object], limit: float = 3.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.01)


def fast() -> Backoff:
    return Backoff(0.02, 0.05)


# one session, all tracks -------------------------------------------------------------------


async def test_all_tracks_one_session_aggregate_play() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener)
        async with running(source):
            await until(lambda: len(listener.packets) >= 7)
    assert rec.methods()[:5] == ["OPTIONS", "DESCRIBE", "SETUP", "SETUP", "PLAY"]
    assert rec.connections == 1
    assert rec.first("DESCRIBE").headers.get("Accept") == "application/sdp"
    setups = [r for _, r in rec.requests if r.method == "SETUP"]
    assert [s.uri for s in setups] == [url + "/trackID=0", url + "/trackID=1"]
    assert "RTP/AVP/TCP;unicast;interleaved=0-1" in (setups[0].headers.get("Transport") or "")
    assert "interleaved=2-3" in (setups[1].headers.get("Transport") or "")
    assert setups[0].headers.get("Session") is None
    assert setups[1].headers.get("Session") == "SESS1"
    play = rec.first("PLAY")
    assert play.uri == url + "/"  # a=control:* designates the Content-Base (RFC 2326 C.1.1)
    assert play.headers.get("Session") == "SESS1"
    assert all(r.headers.get("User-Agent") == "rmfproxy" for _, r in rec.requests)
    # The burst came in the same TCP segment as the PLAY reply: held back, then delivered
    # after on_connected, in order.
    assert listener.events[0][0] == "connected"
    assert len(listener.connected[0].media) == 2
    assert [(t, c) for t, c, _ in listener.packets[:7]] == [(0, False)] * 5 + [
        (1, False),
        (0, True),
    ]
    assert rtp.parse_header(listener.packets[0][2]).sequence == 100
    assert source.stats.packets >= 7 and source.stats.bytes > 7 * 12
    assert source.stats.last_packet_time > 0 and source.stats.sessions == 1
    assert not listener.lost


async def test_server_chosen_channels_are_mapped_to_tracks() -> None:
    rec = FakeRecorder(channel_offset=10)
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: len(listener.packets) >= 7)
    assert {(t, c) for t, c, _ in listener.packets} == {(0, False), (1, False), (0, True)}


async def test_request_url_is_the_base_without_content_base() -> None:
    rec = FakeRecorder(content_base=False)
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: listener.packets)
    assert rec.first("SETUP").uri == url + "/trackID=0"
    assert rec.first("PLAY").uri == url


async def test_options_not_supported_is_tolerated() -> None:
    rec = FakeRecorder(options_status=501)
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: listener.packets)
    assert not listener.lost


# authentication, secrets ---------------------------------------------------------------------


def assert_no_secret(
    logs: list[MutableMapping[str, Any]], listener: Listener, source: RtspSource
) -> None:
    assert logs, "structlog output was not captured"
    assert PASSWORD not in repr(logs)
    assert PASSWORD not in repr(listener.lost)
    assert PASSWORD not in repr(source) and PASSWORD not in source.url


@pytest.mark.parametrize("auth", ["digest", "digest-no-qop", "basic"])
async def test_auth_with_credentials_from_arguments(auth: Any) -> None:
    rec = FakeRecorder(auth=auth)
    listener = Listener()
    with structlog.testing.capture_logs() as logs:
        async with serve(rec) as url:
            source = RtspSource(url, listener, username=USER, password=PASSWORD)
            async with running(source):
                await until(lambda: len(listener.packets) >= 7)
    assert not listener.lost
    assert any(e["event"] == "upstream.connected" for e in logs)
    assert_no_secret(logs, listener, source)
    # One 401 (on the first request), then every request carries credentials.
    methods = rec.methods()
    assert methods[:2] == ["OPTIONS", "OPTIONS"]
    authz = [r.headers.get("Authorization") or "" for _, r in rec.requests[1:]]
    assert all(authz)
    if auth == "basic":
        assert all(a.startswith("Basic ") for a in authz)
    else:
        assert all(a.startswith("Digest ") for a in authz)
        assert all(("qop=auth" in a) == (auth == "digest") for a in authz)
    if auth == "digest":
        # The same challenge keeps being answered with a new nonce count (RFC 7616 §3.4).
        counts = [a.split("nc=")[1].split(",")[0] for a in authz]
        assert counts == [f"{i:08x}" for i in range(1, len(authz) + 1)]


async def test_credentials_from_url_are_not_sent_on_the_wire() -> None:
    rec = FakeRecorder(auth="digest")
    listener = Listener()
    with structlog.testing.capture_logs() as logs:
        async with serve(rec) as url:
            secret_url = url.replace("rtsp://", f"rtsp://{USER}:{PASSWORD}@")
            source = RtspSource(secret_url, listener)
            async with running(source):
                await until(lambda: len(listener.packets) >= 7)
    assert_no_secret(logs, listener, source)
    assert all(PASSWORD not in r.uri and "@" not in r.uri for _, r in rec.requests)
    assert all(r.uri.startswith(url) for _, r in rec.requests)


async def test_wrong_password_is_auth_failed_then_retried() -> None:
    rec = FakeRecorder(auth="digest")
    listener = Listener()
    with structlog.testing.capture_logs() as logs:
        async with serve(rec) as url:
            secret_url = url.replace("rtsp://", f"rtsp://{USER}:{PASSWORD}x@")
            source = RtspSource(secret_url, listener, backoff=fast())
            async with running(source):
                await until(lambda: len(listener.lost) >= 2)
    assert listener.lost[:2] == ["auth-failed", "auth-failed"]
    assert rec.connections >= 2
    assert_no_secret(logs, listener, source)


async def test_401_without_credentials_is_auth_failed() -> None:
    rec = FakeRecorder(auth="digest")
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: listener.lost)
    assert listener.lost[0] == "auth-failed"


# keepalive ----------------------------------------------------------------------------------


async def test_get_parameter_keepalive_within_session_timeout() -> None:
    rec = FakeRecorder(timeout=2)
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: listener.packets)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await until(lambda: "GET_PARAMETER" in rec.methods(), 2.0)
        assert loop.time() - t0 < 1.5  # timeout/2 = 1 s
        # Interleaved data keeps flowing while the keepalive is outstanding or answered.
        rec.send(frame(0, rtp.build(96, 200, 0, 0xABCD, b"\x41x")))
        await until(
            lambda: any(
                rtp.parse_header(p).sequence == 200
                for t, c, p in listener.packets
                if not c and t == 0
            )
        )
    assert rec.first("GET_PARAMETER").headers.get("Session") == "SESS1"
    assert not listener.lost


async def test_options_keepalive_when_get_parameter_not_public() -> None:
    rec = FakeRecorder(timeout=2, public="OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN")
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: listener.packets)
        await until(lambda: rec.methods().count("OPTIONS") >= 2, 2.0)
    assert "GET_PARAMETER" not in rec.methods()


async def test_unanswered_keepalive_is_lost() -> None:
    rec = FakeRecorder(timeout=2, mute_after_play=True)
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener, request_timeout=0.3, backoff=Backoff(5, 5))
        async with running(source):
            await until(lambda: listener.lost, 2.5)
    assert listener.lost == ["keepalive-failed"]


# losses and reconnects ----------------------------------------------------------------------


async def test_tcp_close_is_lost_once_then_reconnects() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener)
        async with running(source):
            await until(lambda: listener.packets)
            rec.writers[-1].close()
            await until(lambda: listener.lost)
            await until(lambda: len(listener.connected) >= 2)
    assert listener.lost == ["tcp-closed"]
    assert rec.connections == 2
    assert source.stats.reconnects == 1 and source.stats.sessions == 2
    kinds = [k for k, _ in listener.events]
    assert kinds.index("lost") < len(kinds) - 1 - kinds[::-1].index("connected")


async def test_rtcp_bye_is_lost_and_nothing_follows_it() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener, backoff=Backoff(5, 5))):
        await until(lambda: len(listener.packets) >= 7)
        before = len(listener.packets)
        bye = rtcp.build_receiver_report(0xABCD) + rtcp.build_bye([0xABCD])  # compound
        rec.send(frame(1, bye) + frame(0, rtp.build(96, 300, 0, 0xABCD, b"\x41x")))
        await until(lambda: listener.lost)
        await asyncio.sleep(0.05)
    assert listener.lost == ["rtcp-bye"]
    assert len(listener.packets) == before


async def test_error_status_is_lost_with_the_status_in_the_detail() -> None:
    # The reason is a bounded value (a metric label downstream); the status is detail.
    rec = FakeRecorder(describe_status=404)
    listener = Listener()
    with structlog.testing.capture_logs() as logs:
        async with serve(rec) as url, running(RtspSource(url, listener, backoff=Backoff(5, 5))):
            await until(lambda: listener.lost)
    assert listener.lost == [LossReason.RTSP_ERROR] and listener.lost == ["rtsp-error"]
    assert not listener.connected
    lost = [e for e in logs if e["event"] == "upstream.lost"]
    assert lost[0]["reason"] == "rtsp-error" and lost[0]["detail"] == "DESCRIBE 404"


async def test_refused_connection_is_connect_failed() -> None:
    # A port that was just free: nothing listens there.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    listener = Listener()
    source = RtspSource(f"rtsp://127.0.0.1:{port}/cam", listener, backoff=fast())
    async with running(source):
        await until(lambda: len(listener.lost) >= 2)
    assert set(listener.lost) == {LossReason.CONNECT_FAILED}


async def test_server_redirect_request_is_lost() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener, backoff=Backoff(5, 5))):
        await until(lambda: listener.packets)
        redirect = Request("REDIRECT", url, Headers({"CSeq": "1", "Location": url + "2"}))
        rec.send(redirect.serialize())
        await until(lambda: listener.lost)
    assert listener.lost == ["redirect"]


async def test_unresponsive_server_is_timeout() -> None:
    rec = FakeRecorder(silent=True)
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener, request_timeout=0.2, backoff=fast())
        async with running(source):
            await until(lambda: len(listener.lost) >= 2)
    assert listener.lost[:2] == ["timeout", "timeout"]


# cancellation and close ---------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["request", "playing", "backoff"])
async def test_cancel_is_prompt(phase: str) -> None:
    rec = FakeRecorder(
        silent=phase == "request", describe_status=404 if phase == "backoff" else 200
    )
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener, request_timeout=30, backoff=Backoff(30, 30))
        task = asyncio.create_task(source.run())
        if phase == "request":
            await until(lambda: rec.requests)
        elif phase == "playing":
            await until(lambda: listener.packets)
        else:
            await until(lambda: listener.lost)
        seen = len(listener.events)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - t0 < 1.0
        assert len(listener.events) == seen  # no on_lost for a cancel
        assert source._conn is None and not source._udp
        # The server sees the connection go.
        await until(lambda: all(w.is_closing() for w in rec.writers), 1.0)


async def test_aclose_sends_teardown_and_ends_run() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener)
        task = asyncio.create_task(source.run())
        await until(lambda: listener.packets)
        await source.aclose()
        await asyncio.wait([task], timeout=1.0)
        assert task.done()
    teardown = rec.first("TEARDOWN")
    assert teardown.uri == url + "/" and teardown.headers.get("Session") == "SESS1"
    assert not listener.lost


async def test_aclose_does_not_wait_for_a_mute_server() -> None:
    rec = FakeRecorder(mute_after_play=True)
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener, request_timeout=30)
        task = asyncio.create_task(source.run())
        await until(lambda: listener.packets)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await source.aclose()
        assert loop.time() - t0 < 1.0
        assert task.done()
    assert "TEARDOWN" in rec.methods()


# receiver reports and UDP -------------------------------------------------------------------


async def test_receiver_reports_sent_on_each_tracks_rtcp_channel() -> None:
    rec = FakeRecorder(channel_offset=4)
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: {ch for ch, _ in rec.rtcp_in()} >= {5, 7})
    for _, data in rec.rtcp_in():
        assert data[1] == RTCP_RR


async def test_udp_transport_receives_datagrams_and_sends_reports() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener, transport="udp")
        async with running(source):
            await until(lambda: listener.connected)
            setups = [r for _, r in rec.requests if r.method == "SETUP"]
            for s in setups:
                spec = TransportSpec.parse(s.headers.get("Transport") or "")
                assert spec.lower_transport == "UDP" and spec.client_port is not None
                assert spec.client_port[0] % 2 == 0
                assert spec.client_port[1] == spec.client_port[0] + 1
            assert rec.udp_clients[0] != rec.udp_clients[1]
            assert rec.udp_rtp is not None and rec.udp_rtcp is not None
            rtp_port, rtcp_port = rec.udp_clients[1]
            rec.udp_rtp.sendto(rtp.build(8, 7, 2, 3, b"\xd5x"), ("127.0.0.1", rtp_port))
            rec.udp_rtcp.sendto(rtcp.build_sender_report(3, 1, 2, 3, 4), ("127.0.0.1", rtcp_port))
            await until(lambda: {(t, c) for t, c, _ in listener.packets} == {(1, False), (1, True)})
            # RRs arrive at the server's RTCP port, one per track.
            await until(lambda: len(rec.udp_rtcp_peer.received) >= 2)
        assert listener.packets[0][2] == rtp.build(8, 7, 2, 3, b"\xd5x")
        assert all(d[1] == RTCP_RR for d, _ in rec.udp_rtcp_peer.received)
        assert source.stats.last_packet_time > 0
