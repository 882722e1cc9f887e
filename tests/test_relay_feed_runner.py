"""The feed's asyncio runner: it arms the core's deadline and nothing more (no polling),
and stopping it ends every upstream session with TEARDOWN (RFC 2326 §10.7), all at once
and bounded: recorders free the session at once instead of at its timeout, and a
recorder that no longer answers cannot hang a shutdown or a reconfiguration."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from rmfproxy.app import Proxy
from rmfproxy.config import parse_config
from rmfproxy.relay.feed import STOP_TIMEOUT, Feed, _Listener
from rmfproxy.relay.feed_core import EARLY, MAX_WAIT
from rmfproxy.rtsp.sdp import SessionDescription
from rmfproxy.upstream.source import TEARDOWN_TIMEOUT, RtspSource, SourceStats
from tests.test_upstream_source import FakeRecorder, serve, until

pytestmark = pytest.mark.asyncio(loop_factories=["uvloop"])

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
)


class Idle:
    """A source whose session plays but delivers nothing."""

    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.autoplay = True
        self.stats = SourceStats()
        self.transport = "tcp"

    async def run(self) -> None:
        self.listener.on_connected(SessionDescription.parse(SDP))
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        pass


async def test_the_timer_fires_at_the_cores_deadlines_only() -> None:
    loop = asyncio.get_running_loop()
    feed = Feed("lobby", lambda i, listener: (f"r{i}", Idle(listener)), 1, clock=loop.time)  # type: ignore[arg-type,return-value]
    checks: list[float] = []
    dues: list[float] = []
    on_timer = feed.core.on_timer

    def check(now: float) -> None:
        checks.append(now)
        on_timer(now)
        dues.append(feed.core.deadline())  # what the runner arms next

    feed.core.on_timer = check  # type: ignore[method-assign]
    feed.start()
    dues.append(feed.core.deadline())
    try:
        await until(lambda: len(checks) >= 2, 1.0)
    finally:
        await feed.stop()
    # Nothing delivers: a check every MAX_WAIT, each when it was due (not sooner, and not
    # at the next tick of some polling loop).
    for now, due in zip(checks[:2], dues[:2], strict=True):
        assert due - EARLY <= now < due + 0.05
    assert checks[1] - checks[0] == pytest.approx(MAX_WAIT, abs=0.05)


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


async def test_the_proxy_stops_its_feeds_all_at_once() -> None:
    # Three cameras whose recorders stop answering after PLAY: each feed's stop waits out
    # its TEARDOWN, and the proxy waits for them together (a site of dead recorders shuts
    # down in one TEARDOWN timeout, not one per camera).
    recorders = [FakeRecorder(mute_after_play=True) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serve(r)) for r in recorders]
        cameras = {f"cam{i}": {"sources": [{"url": u}]} for i, u in enumerate(urls)}
        proxy = Proxy(parse_config({"rtsp": {"listen": "127.0.0.1:0"}, "cameras": cameras}))
        await proxy.start()
        await until(lambda: all(f.slots[0].packets for f in proxy.feeds.values()))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await proxy.stop()
        took = loop.time() - t0
    assert [r.methods().count("TEARDOWN") for r in recorders] == [1, 1, 1]
    assert TEARDOWN_TIMEOUT <= took < 2 * TEARDOWN_TIMEOUT, took
