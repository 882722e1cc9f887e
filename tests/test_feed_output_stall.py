"""Health reflects what clients get: when the outbound video stops although the active
source is healthy, /readyz, the API and the metrics say so, and the feed restarts the
stream at the active source's next keyframe instead of staying frozen."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from rmfproxy.relay import feed_core
from tests.support import relay
from tests.test_ops_api import get_json, http, sample, scrape, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]
__all__ = ["http"]


async def test_a_frozen_output_is_reported_and_restarted(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_core, "OUTPUT_STALL", 1.0)
    async with relay("h264", gop=10, api={"ready_grace": 600}) as (_sim, proxy):
        feed = proxy.feeds["lobby"]
        merger = feed.merger
        assert merger is not None
        await wait_for(lambda: feed.delivering(feed.clock()))
        # A glitch nothing else catches: the merger stops releasing anything while both
        # sources keep delivering (the stand-in for the stuck merged stream of the report).
        real_push = merger.push
        stuck = True

        def push(*args: Any) -> Any:
            out = real_push(*args)
            return [] if stuck else out

        monkeypatch.setattr(merger, "push", push)
        await wait_for(lambda: not feed.delivering(feed.clock()), 4)
        status, body = await get_json(http, proxy.api_url("/readyz"))
        assert status == 503 and body["cameras_not_delivering"] == ["lobby"]
        status, cam = await get_json(http, proxy.api_url("/api/v1/cameras/lobby"))
        assert cam["healthy"] is True and cam["delivering"] is False
        samples = await scrape(http, proxy)
        assert sample(samples, "rmfproxy_camera_delivering", camera="lobby") == 0
        await wait_for(lambda: feed.output_stalls >= 1, 4)
        assert merger.anchoring(feed.active) or feed.output_stalls >= 1
        stuck = False
        await wait_for(lambda: feed.delivering(feed.clock()), 4)
        await asyncio.sleep(0.1)
        status, body = await get_json(http, proxy.api_url("/readyz"))
        assert status == 200
        samples = await scrape(http, proxy)
        assert sample(samples, "rmfproxy_camera_output_stalls_total", camera="lobby") >= 1
