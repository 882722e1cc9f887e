"""The client-facing RTSP server answers bad and out-of-order requests with the right
status, keeps serving others, and refuses unauthenticated clients."""

from __future__ import annotations

import asyncio

import pytest

from rmfproxy.serve.access import AccessControl, User
from rmfproxy.serve.server import RtspServer
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.support import FakeClock, rtsp_exchange, until


@pytest.fixture
async def recorder() -> object:
    async with SimCluster(SimSpec(recorders=[("r1", 0)], cameras=["cam"], seconds=1.0)) as sim:
        yield sim.recorders["r1"]


def req(method: str, url: str, cseq: int = 1, extra: str = "") -> bytes:
    return f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n".encode()


async def test_status_codes(recorder: object) -> None:
    server: RtspServer = recorder.server  # type: ignore[attr-defined]
    port = server.port
    base = f"rtsp://127.0.0.1:{port}"
    status, headers, _ = await rtsp_exchange(port, req("OPTIONS", "*"))
    assert status == 200 and "DESCRIBE" in headers["public"]
    status, _, _ = await rtsp_exchange(port, req("DESCRIBE", f"{base}/nope"))
    assert status == 404
    status, headers, body = await rtsp_exchange(port, req("DESCRIBE", f"{base}/cam"))
    assert status == 200 and body.startswith(b"v=0") and headers["content-base"]
    # PLAY on a session that does not exist.
    status, _, _ = await rtsp_exchange(port, req("PLAY", f"{base}/cam", extra="Session: abc\r\n"))
    assert status == 454
    # Multicast only: unsupported transport.
    status, _, _ = await rtsp_exchange(
        port, req("SETUP", f"{base}/cam/trackID=0", extra="Transport: RTP/AVP;multicast\r\n")
    )
    assert status == 461
    status, _, _ = await rtsp_exchange(port, req("SETUP", f"{base}/cam/trackID=0"))
    assert status == 461  # no Transport at all
    status, _, _ = await rtsp_exchange(port, req("RECORD", f"{base}/cam"))
    assert status == 501
    status, _, _ = await rtsp_exchange(port, b"DESCRIBE rtsp://x/cam RTSP/1.0\r\n\r\n")
    assert status == 400  # no CSeq


async def test_wrong_state_is_455(recorder: object) -> None:
    server: RtspServer = recorder.server  # type: ignore[attr-defined]
    port = server.port
    url = f"rtsp://127.0.0.1:{port}/cam"
    rw = await asyncio.open_connection("127.0.0.1", port)
    status, headers, _ = await rtsp_exchange(
        port,
        req("SETUP", f"{url}/trackID=0", 1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"),
        rw,
    )
    assert status == 200
    assert "timeout=60" in headers["session"]
    session = headers["session"].split(";")[0]
    # SETUP again on a READY session is allowed; in PLAYING it is not (RFC 2326 A.1).
    status, _, _ = await rtsp_exchange(port, req("PLAY", url, 2, f"Session: {session}\r\n"), rw)
    assert status == 200
    status, _, _ = await rtsp_exchange(
        port,
        req(
            "SETUP",
            f"{url}/trackID=0",
            3,
            f"Session: {session}\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
        ),
        rw,
    )
    assert status == 455
    rw[1].close()
    await rw[1].wait_closed()


async def test_malformed_requests_keep_server_up(recorder: object) -> None:
    server: RtspServer = recorder.server  # type: ignore[attr-defined]
    port = server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GARBAGE \x00\xff\r\nNOT RTSP AT ALL\r\n\r\n")
    writer.write(b"DESCRIBE rtsp://127.0.0.1/cam RTSP/1.0\r\nCSeq: 7\r\nContent-Length: -5\r\n\r\n")
    writer.write(b"DESCRIBE rtsp://127.0.0.1/cam RTSP/9.9\r\nCSeq: 8\r\n\r\n")
    writer.write(req("OPTIONS", "*", 9))
    await writer.drain()
    replies = b""
    async with asyncio.timeout(5):
        while b"CSeq: 9" not in replies:
            chunk = await reader.read(4096)
            assert chunk, "server closed the connection"
            replies += chunk
    statuses = [
        int(line.split()[1])
        for line in replies.decode(errors="replace").split("\r\n")
        if line.startswith("RTSP/1.0 ")
    ]
    assert 400 in statuses and 505 in statuses and statuses[-1] == 200
    writer.close()
    await writer.wait_closed()
    # And another client is served normally.
    status, _, _ = await rtsp_exchange(port, req("OPTIONS", "*"))
    assert status == 200


async def test_unauthenticated_gets_401_and_no_media(recorder: object) -> None:
    cam = recorder.cameras["cam"]  # type: ignore[attr-defined]
    access = AccessControl(
        [User("alice", "s3cret-pw", frozenset({"cam"})), User("bob", "other-pw", frozenset())]
    )
    server = RtspServer({"cam": cam}.get, access=access)
    await server.start()
    try:
        port = server.port
        url = f"rtsp://127.0.0.1:{port}/cam"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, _ = await rtsp_exchange(port, req("DESCRIBE", url), (reader, writer))
        assert status == 401
        assert headers["www-authenticate"].startswith("Digest ")
        status, _, _ = await rtsp_exchange(
            port,
            req(
                "SETUP", f"{url}/trackID=0", 2, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
            ),
            (reader, writer),
        )
        assert status == 401
        status, _, _ = await rtsp_exchange(port, req("PLAY", url, 3), (reader, writer))
        assert status in (401, 454)
        # No media arrives on this connection.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
        writer.close()
        await writer.wait_closed()
        assert not server.sessions
    finally:
        await server.close()


async def test_session_expires_without_keepalive_and_rtcp_keeps_it(recorder: object) -> None:
    cam = recorder.cameras["cam"]  # type: ignore[attr-defined]
    clock = FakeClock()
    server = RtspServer({"cam": cam}.get, session_timeout=1, clock=clock)
    await server.start()
    try:
        port = server.port
        url = f"rtsp://127.0.0.1:{port}/cam"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        rw = (reader, writer)
        tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
        status, headers, _ = await rtsp_exchange(port, req("SETUP", f"{url}/trackID=0", 1, tcp), rw)
        assert status == 200 and headers["session"].endswith("timeout=1")
        keep_sid = headers["session"].split(";")[0]
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
        status, headers, _ = await rtsp_exchange(
            port, req("SETUP", f"{url}/trackID=0", 1, tcp), (reader2, writer2)
        )
        idle_sid = headers["session"].split(";")[0]
        # Keep the first alive with RTCP receiver reports on its interleaved channel, for
        # 3 s of the server's clock (its reaper's checks made by hand, each after an RR).
        keep = server.sessions[keep_sid]
        for _ in range(6):
            clock.advance(0.5)
            writer.write(b"$\x01\x00\x08\x80\xc9\x00\x01\x00\x00\x00\x01")
            await writer.drain()
            await until(lambda: keep.last_seen == clock.now)
            server.reap()
        assert keep_sid in server.sessions
        assert idle_sid not in server.sessions
        status, _, _ = await rtsp_exchange(
            port, req("PLAY", url, 2, f"Session: {idle_sid}\r\n"), (reader2, writer2)
        )
        assert status == 454
        for w in (writer, writer2):
            w.close()
            await w.wait_closed()
    finally:
        await server.close()
