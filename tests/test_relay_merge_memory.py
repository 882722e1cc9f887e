"""What a camera's merger keeps once its history is full: two aligned sources, 600 AUs
(24 s at 25 fps, past the 256-AU history). Its fixed state is most of a camera's memory
besides the pictures; 100 cameras hold 100 of these."""

from __future__ import annotations

import gc
import random
import tracemalloc

from rmfproxy.relay.merge import RING_DIFFERENT, Merger, MergeState
from rmfproxy.rtp import h264
from tests.merge_support import FPS, Recorder, h264_camera

LIMIT = 75_000
"""Bytes: 45 kB now (18 kB of it the fingerprint index), 150 kB with a pair of tuples
and an index per remembered AU, 129 stamps and eight deques of floats per source."""


def test_a_mergers_state_stays_small_once_its_history_is_full() -> None:
    cam = h264_camera(600, seed=3, gop=50)
    recorders = [Recorder(seq=100, ts=5000, ssrc=1), Recorder(seq=9000, ts=7777, ssrc=2)]
    wire = [[(r.packets(n, au)) for r in recorders] for n, au in enumerate(cam)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        m = Merger(h264.FORMAT, 90000, random.Random(1))
        m.anchor(0)
        m.active = 0
        sent = 0
        for n, per_source in enumerate(wire):
            for index, pkts in enumerate(per_source):
                for p in pkts:
                    sent += len(m.push(index, p, 12, len(p), n / FPS + index * 0.005))
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert sent >= sum(len(w[0]) for w in wire) * 0.99  # the stream went out
    assert all(s.located for s in m._sources.values())  # both sources aligned, holding nothing
    assert kept < LIMIT, kept


def test_a_standby_of_another_encoding_holds_few_pictures() -> None:
    # Independent recorders: B never matches the stream. Called different, it keeps the
    # last RING_DIFFERENT AUs (to be found again if it turns into a copy), not 2 s of them.
    a_cam, b_cam = h264_camera(300, seed=3, gop=50), h264_camera(300, seed=4, gop=50)
    a, b = Recorder(seq=100, ts=5000, ssrc=1), Recorder(seq=9000, ts=7777, ssrc=2)
    m = Merger(h264.FORMAT, 90000, random.Random(1))
    m.anchor(0)
    m.active = 0
    for n in range(300):
        for index, (rec, cam) in enumerate(((a, a_cam), (b, b_cam))):
            for p in rec.packets(n, cam[n]):
                m.push(index, p, 12, len(p), n / FPS + index * 0.005)
    held = m._sources[1]
    assert m.state(1) is MergeState.DIFFERENT
    assert len(held.ring) == RING_DIFFERENT
    assert held.ring_bytes == sum(au.payload_bytes for au in held.ring)
