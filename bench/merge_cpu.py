"""CPU per packet of the merge path alone: two recorders of one camera into the merger,
each source's GOP buffer fed AU by AU and the outbound packets into a fan-out GOP buffer,
as the feed does (no sockets, no event loop).

    .venv/bin/python bench/merge_cpu.py [--aus 500] [--repeat 15]

Prints the best of ``--repeat`` runs (process CPU time, so another busy process on the
machine disturbs it far less than the end-to-end benchmarks): microseconds per incoming
packet. Run it in two checkouts to compare a change.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rmfproxy.relay.access_unit import AccessUnit
from rmfproxy.relay.merge import Merger
from rmfproxy.rtp import h264
from rmfproxy.serve.gop import GopBuffer
from tests.merge_support import Recorder

FPS = 25


def camera(count: int) -> list[list[bytes]]:
    """About 1.5 Mbit/s: an IDR of 40 kB every 2 s, P slices of 4-8 kB between."""
    rng = random.Random(5)
    sps, pps = b"\x67" + rng.randbytes(12), b"\x68" + rng.randbytes(4)
    return [
        [sps, pps, b"\x65" + rng.randbytes(40000)]
        if i % 50 == 0
        else [b"\x41" + rng.randbytes(rng.randrange(4000, 8000))]
        for i in range(count)
    ]


def one_run(schedule: list[tuple[float, list[bytearray], list[bytearray]]]) -> float:
    m = Merger(h264.FORMAT, 90000, random.Random(1))
    gops = {0: GopBuffer(), 1: GopBuffer()}
    fanout_gop = GopBuffer()

    def on_au(index: int, au: AccessUnit, now: float) -> None:
        for k, pkt in enumerate(au.packets):
            gops[index].push(0, pkt, au.keyframe and k == 0, now)

    m.on_au = on_au
    m.anchor(0)
    m.active = 0
    t0 = time.process_time()
    for now, a, b in schedule:
        for index, pkts, at in ((0, a, now), (1, b, now + 0.005)):
            for p in pkts:
                for q, key in m.push(index, bytearray(p), 12, len(p), at):
                    fanout_gop.push(0, q, key, at)
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--aus", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    cam = camera(args.aus)
    r1 = Recorder(seq=100, ts=5000, ssrc=1)
    r2 = Recorder(seq=9000, ts=777777, ssrc=2, mtu=1300)
    schedule = [(n / FPS, r1.packets(n, au), r2.packets(n, au)) for n, au in enumerate(cam)]
    packets = sum(len(a) + len(b) for _, a, b in schedule)
    best = min(one_run(schedule) for _ in range(args.repeat))
    per_packet = round(best / packets * 1e6, 2)
    print(json.dumps({"benchmark": "merge_cpu", "packets": packets, "us_per_packet": per_packet}))


if __name__ == "__main__":
    main()
