"""The upstream client against a scripted recorder: one session for all tracks, Digest with
and without qop, keepalives, loss reasons, reconnect, prompt cancellation, no leaked secrets."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import structlog

from rmfproxy.rtp import packet as rtp
from rmfproxy.rtp import rtcp
from rmfproxy.rtsp.auth import DigestServer
from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.upstream.backoff import Backoff
from rmfproxy.upstream.source import RtspSource
from rmfproxy.upstream.url import redact, split_credentials

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\na=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
    "m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=1\r\n"
)
PASSWORD = "pw-Zx81-secret"


@dataclass
class FakeRecorder:
    """Answers the RTSP methods with canned replies, then sends interleaved frames."""

    digest: DigestServer | None = None
    qop: bool = True
    silent: bool = False
    timeout: int = 60
    requests: list[Request] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    connections: int = 0
    udp_target: tuple[str, int] | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        parser = StreamParser(lambda c, d: None)
        try:
            while data := await reader.read(4096):
                parser.feed(data)
                while (ev := parser.next_event()) is not None:
                    if isinstance(ev, Request) and not self.silent:
                        self.requests.append(ev)
                        writer.write(self.reply(ev, writer).serialize())
                        if ev.method == "PLAY":
                            self.send_media(writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def reply(self, req: Request, writer: asyncio.StreamWriter) -> Response:
        h = Headers({"CSeq": req.headers.get("CSeq") or "0"})
        if self.digest is not None:
            auth = req.headers.get("Authorization")
            ok = (
                auth is not None
                and self.digest.verify(auth, req.method, {"cam": PASSWORD}.get, 0.0).user == "cam"
            )
            if not ok:
                challenge = self.digest.challenge(0.0)
                if not self.qop:
                    challenge = challenge.replace(', qop="auth"', "")
                h["WWW-Authenticate"] = challenge
                return Response(401, headers=h)
        if req.method == "OPTIONS":
            h["Public"] = "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"
        elif req.method == "DESCRIBE":
            h["Content-Base"] = req.uri + "/"
            return Response(200, headers=h, body=SDP.encode())
        elif req.method == "SETUP":
            transport = req.headers.get("Transport") or ""
            h["Transport"] = transport
            if "client_port" in transport:
                port = int(transport.split("client_port=")[1].split("-")[0])
                self.udp_target = ("127.0.0.1", port)
                h["Transport"] = transport + ";server_port=40000-40001"
            h["Session"] = f"SESS1;timeout={self.timeout}"
        return Response(200, headers=h)

    def send_media(self, writer: asyncio.StreamWriter) -> None:
        for i in range(5):
            pkt = rtp.build(96, 100 + i, 9000 * i, 0xABCD, b"\x65data")
            writer.write(struct.pack(">cBH", b"$", 0, len(pkt)) + pkt)
        audio = rtp.build(8, 1, 0, 0xABCE, b"\xd5" * 160)
        writer.write(struct.pack(">cBH", b"$", 2, len(audio)) + audio)
        sr = rtcp.build_sender_report(0xABCD, 1, 2, 3, 4)
        writer.write(struct.pack(">cBH", b"$", 1, len(sr)) + sr)

    def send_bye(self) -> None:
        bye = rtcp.build_bye([0xABCD])
        self.writers[-1].write(struct.pack(">cBH", b"$", 1, len(bye)) + bye)


class Listener:
    def __init__(self) -> None:
        self.sdp: list[SessionDescription] = []
        self.packets: list[tuple[int, bool, bytes]] = []
        self.lost: list[str] = []
        self.event = asyncio.Event()

    def on_connected(self, sdp: SessionDescription) -> None:
        self.sdp.append(sdp)

    def on_packet(self, track: int, is_rtcp: bool, data: bytearray) -> None:
        self.packets.append((track, is_rtcp, bytes(data)))
        self.event.set()

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)
        self.event.set()


@contextlib.asynccontextmanager
async def serve(rec: FakeRecorder) -> AsyncIterator[str]:
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        for w in rec.writers:
            w.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def running(source: RtspSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(cond: object, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_all_tracks_one_session_aggregate_play() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: len(listener.packets) >= 7)
    methods = [r.method for r in rec.requests]
    assert methods[:5] == ["OPTIONS", "DESCRIBE", "SETUP", "SETUP", "PLAY"]
    setups = [r for r in rec.requests if r.method == "SETUP"]
    assert setups[0].uri.endswith("/cam/trackID=0") and setups[1].uri.endswith("/cam/trackID=1")
    assert "interleaved=2-3" in (setups[1].headers.get("Transport") or "")
    assert setups[1].headers.get("Session") == "SESS1"
    assert next(r for r in rec.requests if r.method == "PLAY").uri.endswith("/cam/")
    assert {(t, c) for t, c, _ in listener.packets} == {(0, False), (1, False), (0, True)}
    assert len(listener.sdp[0].media) == 2


@pytest.mark.parametrize("qop", [True, False])
async def test_digest_auth(qop: bool) -> None:
    rec = FakeRecorder(digest=DigestServer("rec", b"k"), qop=qop)
    listener = Listener()
    url = None
    with structlog.testing.capture_logs() as logs:
        async with (
            serve(rec) as url,
            running(RtspSource(url, listener, username="cam", password=PASSWORD)),
        ):
            await until(lambda: len(listener.packets) >= 7)
    auth = next(r.headers.get("Authorization") or "" for r in rec.requests if r.method == "PLAY")
    assert ("qop=auth" in auth) == qop
    assert PASSWORD not in repr(logs)


async def test_wrong_password_is_auth_failed_without_secret() -> None:
    rec = FakeRecorder(digest=DigestServer("rec", b"k"))
    listener = Listener()
    async with serve(rec) as url:
        url_with_creds = url.replace("rtsp://", f"rtsp://cam:{PASSWORD}x@")
        with structlog.testing.capture_logs() as logs:
            async with running(RtspSource(url_with_creds, listener)) as _:
                await until(lambda: listener.lost)
    assert listener.lost[0] == "auth-failed"
    assert PASSWORD not in repr(logs) and PASSWORD not in repr(listener.lost)


async def test_keepalive_within_timeout() -> None:
    rec = FakeRecorder(timeout=2)
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: any(r.method == "GET_PARAMETER" for r in rec.requests), 3.0)


async def test_tcp_close_reported_and_reconnects() -> None:
    rec = FakeRecorder()
    listener = Listener()
    source = RtspSource(url="rtsp://127.0.0.1:1/x", listener=listener)
    async with serve(rec) as url:
        source = RtspSource(url, listener, backoff=Backoff(0.05, 0.1))
        async with running(source):
            await until(lambda: listener.packets)
            rec.writers[-1].close()
            await until(lambda: listener.lost)
            assert listener.lost[0] == "tcp-closed"
            await until(lambda: rec.connections >= 2 and len(listener.sdp) >= 2)


async def test_rtcp_bye_is_loss() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener)):
        await until(lambda: listener.packets)
        rec.send_bye()
        await until(lambda: listener.lost)
    assert listener.lost[0] == "rtcp-bye"


async def test_unresponsive_server_times_out_and_cancel_is_prompt() -> None:
    rec = FakeRecorder(silent=True)
    listener = Listener()
    async with serve(rec) as url:
        source = RtspSource(url, listener, request_timeout=0.3, backoff=Backoff(5, 5))
        task = asyncio.create_task(source.run())
        await until(lambda: listener.lost)
        assert listener.lost[0] == "timeout"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert loop.time() - t0 < 1.0
        # And cancelling mid-request (the server never answers) is prompt too.
        source2 = RtspSource(url, Listener(), request_timeout=30)
        task2 = asyncio.create_task(source2.run())
        await asyncio.sleep(0.2)
        t0 = loop.time()
        task2.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task2
        assert loop.time() - t0 < 1.0


async def test_udp_transport_receives_datagrams() -> None:
    rec = FakeRecorder()
    listener = Listener()
    async with serve(rec) as url, running(RtspSource(url, listener, transport="udp")):
        await until(lambda: rec.udp_target is not None and len(listener.sdp) == 1)
        loop = asyncio.get_running_loop()
        sender, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        try:
            assert rec.udp_target is not None
            sender.sendto(rtp.build(96, 1, 2, 3, b"\x65x"), rec.udp_target)
            await until(lambda: any(not c for _, c, _ in listener.packets))
        finally:
            sender.close()


def test_url_credentials_split_and_redacted() -> None:
    clean, user, pw = split_credentials("rtsp://admin:p%40ss@10.0.0.5:554/ch1?x=1")
    assert (clean, user, pw) == ("rtsp://10.0.0.5:554/ch1?x=1", "admin", "p@ss")
    assert redact("rtsp://admin:secret@h/x") == "rtsp://h/x"
    assert "secret" not in repr(RtspSource("rtsp://a:secret@h/x", Listener()))
