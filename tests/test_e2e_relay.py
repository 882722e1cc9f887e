"""End to end: simulated recorders -> proxy -> FFmpeg's RTSP client (PyAV) and aiortsp.

Every frame must decode, and the frame counters the simulator embeds must be
consecutive: nothing lost, nothing repeated, for every concurrent client,
even while another client stalls.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiortsp.rtsp.reader import RTSPReader

from rmfproxy.sim.probe import ProbeResult, read_rtsp
from tests.support import relay

# End to end on the production loop (uvloop); the protocol units run on both loops.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

SECONDS = 10.0
FPS = 25


def assert_clean(r: ProbeResult, seconds: float = SECONDS, name: str = "client") -> None:
    """Every frame decoded, counters consecutive, roughly real-time frame count."""
    assert r.error is None, f"{name}: {r.error}"
    assert r.decode_errors == 0, f"{name}: decode errors, warnings: {r.warnings[:5]}"
    assert r.frames_decoded >= (seconds - 1.5) * FPS, f"{name}: only {r.frames_decoded} frames"
    known = [c for c in r.counters if c is not None]
    assert len(known) == len(r.counters), f"{name}: frames without a marker"
    assert r.lost() == 0, f"{name}: lost {r.lost()} frames"
    assert r.repeated() == 0, f"{name}: repeated {r.repeated()} frames"
    assert r.beyond_span() <= 0, f"{name}: {r.beyond_span()} frames beyond the counters' span"
    assert r.frames_decoded == len(r.counters)


async def stalled_client(
    port: int, path: str, playing: asyncio.Event, release: asyncio.Event
) -> None:
    """An RTSP client that plays over TCP with a tiny receive window, then never reads
    (until ``release``, when it closes)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    url = f"rtsp://127.0.0.1:{port}/{path}"

    async def req(text: str) -> str:
        writer.write(text.encode())
        await writer.drain()
        return (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()

    head = await req(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n")
    length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
    await reader.readexactly(length)
    head = await req(
        f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\n"
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    )
    session = head.split("Session:")[1].split(";")[0].split("\r\n")[0].strip()
    writer.write(f"PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n".encode())
    await writer.drain()
    playing.set()
    await release.wait()  # never read again
    writer.close()


async def aiortsp_frames(url: str, seconds: float) -> int:
    """Count RTP packets received by aiortsp, an RTSP client this project did not write."""
    count = 0
    deadline = time.monotonic() + seconds
    async with RTSPReader(url, timeout=5, run_loop=False) as reader:
        async for _pkt in reader.iter_packets():
            count += 1
            if time.monotonic() > deadline:
                break
    return count


@pytest.mark.parametrize("codec", ["h264", "h265"])
async def test_concurrent_clients_all_clean(codec: str) -> None:
    # A small per-client buffer so the stalled client is cut back within the test.
    rtsp = {"client_buffer_bytes": 64 * 1024}
    async with relay(codec, gop=25, bitrate=800_000, rtsp=rtsp) as (_sim, proxy):  # type: ignore[arg-type]
        url = proxy.url("lobby")
        port = proxy.server.port
        playing, release = asyncio.Event(), asyncio.Event()
        stalled = asyncio.create_task(stalled_client(port, "lobby", playing, release))
        try:
            await playing.wait()
            results = await asyncio.gather(
                asyncio.to_thread(read_rtsp, url, transport="tcp", seconds=SECONDS),
                asyncio.to_thread(read_rtsp, url, transport="tcp", seconds=SECONDS),
                asyncio.to_thread(read_rtsp, url, transport="udp", seconds=SECONDS),
                aiortsp_frames(url, 4.0),
            )
            # The stalled client is still connected: the proxy has been dropping its packets.
            dropped = [s.sink.packets_dropped for s in proxy.server.sessions.values() if s.sink]
        finally:
            release.set()
        await stalled
    tcp1, tcp2, udp, aio_packets = results
    for name, r in (("tcp1", tcp1), ("tcp2", tcp2), ("udp", udp)):
        assert_clean(r, name=name)
        # The stalled client never delays the others: frames keep arriving at the frame rate.
        assert r.max_gap_seconds() < 0.5, f"{name}: stalled for {r.max_gap_seconds():.2f}s"
    assert aio_packets > 4 * FPS
    assert max(dropped) > 100, f"stalled client was never cut back: {dropped}"


async def test_digest_user_reads_granted_camera_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMF_TEST_ALICE", "alice-pw-9")
    monkeypatch.setenv("RMF_TEST_BOB", "bob-pw-9")
    users = [
        {"name": "alice", "password_env": "RMF_TEST_ALICE", "cameras": ["lobby"]},
        {"name": "bob", "password_env": "RMF_TEST_BOB", "cameras": ["gate"]},
    ]
    async with relay("h264", cameras=("lobby", "gate"), rtsp={"users": users}) as (_s, proxy):
        url = proxy.url("lobby")
        anon, alice, bob = await asyncio.gather(
            asyncio.to_thread(read_rtsp, url, seconds=3.0, open_timeout=3.0),
            asyncio.to_thread(
                read_rtsp, url.replace("rtsp://", "rtsp://alice:alice-pw-9@"), seconds=3.0
            ),
            asyncio.to_thread(
                read_rtsp,
                url.replace("rtsp://", "rtsp://bob:bob-pw-9@"),
                seconds=3.0,
                open_timeout=3.0,
            ),
        )
    assert anon.error is not None and anon.frames_decoded == 0
    assert bob.error is not None and bob.frames_decoded == 0
    assert alice.error is None and alice.decode_errors == 0 and alice.frames_decoded > 40
