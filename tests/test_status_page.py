"""The status page in headless Chromium: it renders every camera with its sources and a
live thumbnail, loads nothing from outside the proxy, and follows a forced failover."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rmfproxy.sim.browser import Browser, find_chromium
from tests.support import relay

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_factories=["uvloop"]),
    pytest.mark.skipif(find_chromium() is None, reason="chromium not installed"),
]

CAMERAS = ("lobby", "gate")
TILES = """Array.from(document.querySelectorAll('.tile')).map(t => ({
  camera: t.dataset.camera,
  active: t.dataset.active,
  sources: Array.from(t.querySelectorAll('.src')).map(c => [c.dataset.source, c.className]),
  thumb: t.querySelector('img.thumb').naturalWidth,
  thumbSource: t.querySelector('img.thumb').dataset.source,
  placeholderShown: getComputedStyle(t.querySelector('.nopic')).display !== 'none',
  switches: t.querySelector('.switches').textContent,
}))"""


async def until(browser: Browser, expression: str, limit: float) -> Any:
    """Poll a JavaScript expression until it is truthy; returns its value."""
    async with asyncio.timeout(limit):
        while not (value := await browser.evaluate(expression)):
            await asyncio.sleep(0.2)
    return value


async def test_status_page_shows_every_camera_and_follows_a_failover() -> None:
    async with relay("h264", cameras=CAMERAS, gop=25, size=(640, 360)) as (sim, proxy):
        origin = proxy.api_url("").rstrip("/")
        async with Browser() as browser:
            await browser.goto(proxy.api_url("/"))
            await until(browser, "document.body.dataset.ready === '1'", 10)
            await until(
                browser,
                "document.querySelectorAll('.tile img.thumb').length === 2 && "
                "Array.from(document.querySelectorAll('.tile img.thumb'))"
                ".every(i => i.naturalWidth > 0)",
                15,
            )
            # Both recorders relay the same pictures: observed, and shown on each chip.
            await until(
                browser,
                "Array.from(document.querySelectorAll('.src'))"
                ".every(c => c.dataset.merge === 'aligned')",
                8,
            )
            tiles = {t["camera"]: t for t in await browser.evaluate(TILES)}
            assert set(tiles) == set(CAMERAS)
            for tile in tiles.values():
                assert tile["active"] == "r1"
                assert [s for s, _ in tile["sources"]] == ["r1", "r2"]
                assert all("src healthy" in cls for _, cls in tile["sources"])
                assert tile["thumb"] == 320 and tile["thumbSource"] == "r1"
                assert not tile["placeholderShown"]

            # The coverage plan of the running config: each camera has two recorders.
            await until(browser, "document.getElementById('plan').dataset.ok === 'true'", 10)
            plan = await browser.evaluate("document.getElementById('plan').textContent")
            assert plan == "plan: every single recorder failure covered"
            assert await browser.evaluate(
                "Array.from(document.querySelectorAll('.tile')).every(t => !t.dataset.conflict)"
            )
            # Everything the page loaded came from the proxy itself (no CDN, no font host).
            resources = await browser.evaluate(
                "performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert resources and all(u.startswith(origin) for u in resources), resources

            sim.recorders["r1"].freeze()
            t0 = asyncio.get_running_loop().time()
            await until(
                browser,
                "Array.from(document.querySelectorAll('.tile'))"
                ".every(t => t.dataset.active === 'r2')",
                8,
            )
            took = asyncio.get_running_loop().time() - t0
            tiles = {t["camera"]: t for t in await browser.evaluate(TILES)}
            for tile in tiles.values():
                classes = dict(tile["sources"])
                assert "unhealthy" in classes["r1"] and "is-active" in classes["r2"]
                assert "failover r1 → r2" in tile["switches"]
            # The thumbnail follows the active source.
            await until(
                browser,
                "Array.from(document.querySelectorAll('.tile img.thumb'))"
                ".every(i => i.dataset.source === 'r2' && i.naturalWidth > 0)",
                8,
            )
            errors = [m for m in browser.console if m.startswith(("exception", "error"))]
            assert not errors, errors
    assert took < 5.0, f"the tile changed {took:.1f} s after the fault"
