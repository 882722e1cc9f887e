"""The merger's history of outbound AUs (fingerprint -> index, index -> timestamp), kept in
a ring of HISTORY slots: the last HISTORY AUs are found, older ones are forgotten, and a
picture sent twice is found at its later index until that one leaves the ring."""

from __future__ import annotations

import random

from rmfproxy.relay.merge import HISTORY, Merger
from rmfproxy.rtp import h264


def test_history_keeps_the_last_aus_and_forgets_older_ones() -> None:
    m = Merger(h264.FORMAT, 90000, random.Random(1))
    total = HISTORY + 50
    for i in range(total):
        fp = 7 if i in (10, HISTORY + 20) else 1000 + i  # one picture sent twice
        m._record(fp, (0xFFFFFF00 + 3600 * i) & 0xFFFFFFFF)  # timestamps wrap
    assert m.head == total - 1
    first = total - HISTORY
    for i in range(first, total):
        fp = 7 if i == HISTORY + 20 else 1000 + i
        assert m._sent_index(fp) == i
        assert m._out_ts_of(i) == (0xFFFFFF00 + 3600 * i) & 0xFFFFFFFF
    assert all(m._sent_index(1000 + i) is None for i in range(first))
    assert len(m._fp_index) == HISTORY
    for _ in range(HISTORY - 30):  # up to the last AU that still has the second copy
        m._record(0, 0)
    assert m._sent_index(7) == HISTORY + 20
    m._record(0, 0)
    assert m._sent_index(7) is None
