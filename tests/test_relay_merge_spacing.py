"""The merger's frame spacing, kept per run as AUs come, equals the median over the runs of
its last stamps (the definition), through jitter, stalls, lost AUs and jumps. The merger
itself keeps only the stamps of the last run; the test keeps them all."""

from __future__ import annotations

import random
import statistics
from collections import deque

from rmfproxy.relay.access_unit import AccessUnit
from rmfproxy.relay.merge import SPACING_CHUNK, SPACING_CHUNKS, Merger
from rmfproxy.rtp import h264
from rmfproxy.rtp.seqnum import ts_diff


def reference(stamps: deque[tuple[int, int]]) -> float:
    """The definition: runs of SPACING_CHUNK stamps ending at the last one, the one
    SPACING_CHUNK before, ...; the median of their mean spacings."""
    if len(stamps) < 2:
        return 0.0
    if len(stamps) <= SPACING_CHUNK:
        (n0, t0), (n1, t1) = stamps[0], stamps[-1]
        return ts_diff(t1, t0) / (n1 - n0)
    means = []
    for i in range(len(stamps) - 1 - SPACING_CHUNK, -1, -SPACING_CHUNK):
        (n0, t0), (n1, t1) = stamps[i], stamps[i + SPACING_CHUNK]
        means.append(ts_diff(t1, t0) / (n1 - n0))
    return statistics.median(means)


def test_spacing_follows_its_definition_au_by_au() -> None:
    rng = random.Random(7)
    m = Merger(h264.FORMAT, 90000, random.Random(1))
    m.reset_source(0)
    src = m._source(0)
    ts = 0xFFFF0000  # wraps
    checked = 0
    stamps: deque[tuple[int, int]] = deque(maxlen=SPACING_CHUNKS * SPACING_CHUNK + 1)
    for n in range(600):
        ts = (ts + 3600 + rng.randrange(-400, 400)) & 0xFFFFFFFF
        if n in (300, 450):
            ts = (ts + 90000 * 30) & 0xFFFFFFFF  # a jump: start over
        if n % 41 == 0:
            ts = (ts + 3600 * 6) & 0xFFFFFFFF  # a stall
        complete = n % 13 != 5  # a lost packet now and then
        m._learn_spacing(src, AccessUnit(ts, complete=complete))
        if complete:
            if src.stamped == 1:  # the first stamp, or the merger started over
                stamps.clear()
            stamps.append((src.au_count, ts))
        assert list(src.stamps) == list(stamps)[-1 - SPACING_CHUNK :], n
        assert src.spacing == reference(stamps), n
        checked += len(stamps) > 3 * SPACING_CHUNK
    assert checked > 100  # the median over several runs was exercised, not only the start
    assert 3000 < src.spacing < 4200
