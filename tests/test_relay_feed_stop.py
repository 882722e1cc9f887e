"""Stopping a feed ends every upstream session with TEARDOWN (RFC 2326 §10.7), all at
once and bounded: recorders free the session at once instead of at its timeout, and a
recorder that no longer answers cannot hang a shutdown or a reconfiguration."""

from __future__ import annotations

import asyncio

import pytest

from rmfproxy.relay.feed import STOP_TIMEOUT, Feed, _Listener
from rmfproxy.upstream.source import TEARDOWN_TIMEOUT, RtspSource
from tests.test_upstream_source import FakeRecorder, serve, until

pytestmark = pytest.mark.asyncio(loop_factories=["uvloop"])


async def test_stop_sends_teardown_to_every_recorder_in_parallel() -> None:
    # r0 answers; r1 and r2 stop answering after PLAY: each TEARDOWN waits for its
    # timeout, so one after the other would take twice as long as both at once.
    recorders = [FakeRecorder(), FakeRecorder(mute_after_play=True)]
    recorders.append(FakeRecorder(mute_after_play=True))
    async with serve(recorders[0]) as u0, serve(recorders[1]) as u1, serve(recorders[2]) as u2:
        urls = [u0, u1, u2]

        def make(index: int, listener: _Listener) -> tuple[str, RtspSource]:
            return f"r{index}", RtspSource(urls[index], listener)

        feed = Feed("lobby", make, len(urls))
        feed.start()
        await until(lambda: all(s.packets for s in feed.slots))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await feed.stop()
        took = loop.time() - t0
    assert [r.methods().count("TEARDOWN") for r in recorders] == [1, 1, 1]
    assert TEARDOWN_TIMEOUT <= took < min(2 * TEARDOWN_TIMEOUT, STOP_TIMEOUT + 0.1)
