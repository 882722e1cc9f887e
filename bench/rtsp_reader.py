"""A minimal RTSP-over-TCP reader for benchmarks: counts packets and bytes, and timestamps
the arrival of each simulator frame marker (so two readers can be compared frame by frame)."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field

from rmfproxy.rtsp.message import Headers, Request, Response, StreamParser
from rmfproxy.rtsp.sdp import SessionDescription, resolve_control
from rmfproxy.sim.marker import RMF_UUID, find_marker


@dataclass
class ReaderStats:
    """What one reader saw."""

    packets: int = 0
    bytes: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)


def client_ssl(url: str) -> ssl.SSLContext | None:
    """TLS for an ``rtsps://`` URL, without verification: a benchmark measures what TLS
    costs, not whom to trust. None for ``rtsp://``."""
    if not url.startswith("rtsps://"):
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def read(url: str, seconds: float, stats: ReaderStats, warmup: float = 0.0) -> None:
    """Play ``url``; retries for a while when the server answers 503 (still preparing)."""
    for attempt in range(20):
        try:
            await _read(url, seconds, stats, warmup)
            return
        except Unavailable:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)


class Unavailable(RuntimeError):
    """The server answered 503."""


async def _read(url: str, seconds: float, stats: ReaderStats, warmup: float) -> None:
    """Play ``url`` (all tracks interleaved) and count for ``seconds`` after ``warmup``."""
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port), ssl=client_ssl(url))
    counting = False

    def on_frame(channel: int, data: bytearray) -> None:
        if not counting or channel % 2:
            return
        stats.packets += 1
        stats.bytes += len(data)
        if RMF_UUID in data:
            m = find_marker(data)
            if m is not None:
                stats.arrivals[m[0]] = time.monotonic()

    parser = StreamParser(on_frame)
    cseq = 0
    session: str | None = None

    async def request(method: str, uri: str, **headers: str) -> Response:
        nonlocal cseq, session
        cseq += 1
        h = Headers({"CSeq": str(cseq), **{k.replace("_", "-"): v for k, v in headers.items()}})
        if session:
            h["Session"] = session
        writer.write(Request(method, uri, h).serialize())
        while True:
            ev = parser.next_event()
            if isinstance(ev, Response):
                if ev.status == 503:
                    writer.close()
                    raise Unavailable(uri)
                if ev.status != 200:
                    raise RuntimeError(f"{method} {uri}: {ev.status}")
                return ev
            data = await reader.read(65536)
            if not data:
                raise RuntimeError("connection closed")
            parser.feed(data)

    resp = await request("DESCRIBE", url, Accept="application/sdp")
    sdp = SessionDescription.parse(resp.body.decode())
    base = resp.headers.get("Content-Base") or url
    for i, m in enumerate(sdp.media):
        r = await request(
            "SETUP",
            resolve_control(base, m.control),
            Transport=f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}",
        )
        session = (r.headers.get("Session") or "").split(";")[0]
    await request("PLAY", resolve_control(base, sdp.control) if sdp.control else base)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while (now := loop.time()) < start + warmup + seconds:
            counting = now >= start + warmup
            data = await asyncio.wait_for(reader.read(262144), 5)
            if not data:
                break
            parser.feed(data)
    finally:
        writer.close()
