"""CPU per packet of the whole packet path in one process, without sockets: two recorders'
interleaved RTSP byte streams into ``_Conn.data_received`` (the upstream read), through
the RTSP stream parser, the source, the feed runner's listener, the feed core, the merger
and the fan-out, to one TCP client sink whose transport only counts what it is given.

    .venv/bin/python bench/ingest_cpu.py [--aus 500] [--repeat 7] [--chunk 4096]
        [--profile FILE]

``--chunk``: bytes per ``data_received`` call (a TCP read; at 1.5 Mbit/s a read carries
one to a few packets). Prints the best of ``--repeat`` runs of process CPU time in
microseconds per incoming packet (both sources' packets count); ``--profile`` writes a
cProfile of one more run. Run it in two checkouts to compare a change.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.merge_cpu import camera
from rmfproxy.log import configure_logging
from rmfproxy.relay.feed import Feed
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.serve.sink import ClientSink, TcpTrack
from rmfproxy.upstream.source import RtspSource, _Conn
from tests.merge_support import Recorder

FPS = 25
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
)


class _Transport:
    """A client connection that takes everything (counts the bytes)."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def streams(aus: int, chunk: int) -> tuple[list[tuple[float, list[bytes], list[bytes]]], int]:
    """Per AU: its time and each recorder's interleaved bytes (channel 0), cut into reads;
    and the number of packets."""
    cam = camera(aus)
    r1 = Recorder(seq=100, ts=5000, ssrc=1)
    r2 = Recorder(seq=9000, ts=777777, ssrc=2, mtu=1300)

    count = 0

    def reads(pkts: list[bytearray]) -> list[bytes]:
        nonlocal count
        count += len(pkts)
        wire = b"".join(b"$\x00" + len(p).to_bytes(2, "big") + p for p in pkts)
        return [wire[i : i + chunk] for i in range(0, len(wire), chunk)]

    schedule = [
        (n / FPS, reads(r1.packets(n, au)), reads(r2.packets(n, au))) for n, au in enumerate(cam)
    ]
    return schedule, count


async def one_run(schedule: list[tuple[float, list[bytes], list[bytes]]]) -> tuple[float, int]:
    """CPU seconds for the schedule, and the bytes the client got."""
    clock = [0.0]
    sources: list[RtspSource] = []

    def make(index: int, listener: Any) -> tuple[str, RtspSource]:
        src = RtspSource(f"rtsp://127.0.0.1:1/r{index}", listener, name=f"r{index}")
        src._channels[0] = (0, False)
        src._early = None  # playing: packets go to the listener at once
        sources.append(src)
        return f"r{index}", src

    feed = Feed("cam", make, 2, clock=lambda: clock[0])
    feed.core.on_start(0.0)
    sdp = SessionDescription.parse(SDP)
    for i in range(2):
        feed.core.on_connected(i, sdp, 0.0)
    feed.core.on_timer(0.0)  # the initial switch is planned
    transport = _Transport()
    sink = ClientSink(
        tcp=transport,  # type: ignore[arg-type]
        udp_rtp=None,
        udp_rtcp=None,
        tracks={0: TcpTrack(0, 1)},
        limit=4 << 20,
        on_close=lambda reason: None,
    )
    feed.attach(sink)
    conns = [_Conn(s) for s in sources]
    t0 = time.process_time()
    for now, a, b in schedule:
        clock[0] = now
        for data in a:
            conns[0].data_received(data)
        clock[0] = now + 0.005
        for data in b:
            conns[1].data_received(data)
        sink._flush()  # the loop turn's end
        if feed.core.deadline() <= clock[0]:
            feed.core.on_timer(clock[0])  # the runner's timer (switches, reports)
    return time.process_time() - t0, transport.written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--aus", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--profile", type=Path, default=None)
    args = ap.parse_args()
    configure_logging("json", "warning")
    schedule, packets = streams(args.aus, args.chunk)
    runs = [asyncio.run(one_run(schedule)) for _ in range(args.repeat)]
    best = min(cpu for cpu, _ in runs)
    if args.profile is not None:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(one_run(schedule))
        prof.disable()
        prof.dump_stats(str(args.profile))
    print(
        json.dumps(
            {
                "benchmark": "ingest_cpu",
                "packets": packets,
                "client_bytes": runs[0][1],
                "us_per_packet": round(best / packets * 1e6, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
