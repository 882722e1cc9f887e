"""The status page's archive timeline in headless Chromium: a recorder frozen for a few
seconds shows as a gap on its own bar and on no other, time before the journal began is
"no data" rather than a gap, a click on the gap offers the MP4 of the minute around it,
and without a journal there is no timeline (and a single coverage request)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from rmfproxy.archive.coverage import union
from rmfproxy.archive.report import parse_time
from rmfproxy.archive.runner import CoverageJournal
from rmfproxy.sim.browser import Browser, find_chromium
from tests.support import relay

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_factories=["uvloop"]),
    pytest.mark.skipif(find_chromium() is None, reason="chromium not installed"),
]

FREEZE = 3.0
HOURS = 0.05
"""The page's window (?hours=, 3 min): a few seconds of history span several pixels."""
BARS = """Array.from(document.querySelectorAll('.tile[data-camera=lobby] .tl-bar')).map(b => ({
  source: b.dataset.source,
  label: b.getAttribute('aria-label'),
  segments: Array.from(b.querySelectorAll('.tl-seg'))
    .map(s => [s.className.split(' ')[1], s.dataset.start, s.dataset.end]),
}))"""
WINDOW = """(() => {
  const tl = document.querySelector('.tile[data-camera=lobby] .timeline');
  const r = tl.querySelector('.tl-bar[data-source=r1]').getBoundingClientRect();
  return {start: tl.dataset.start, end: tl.dataset.end, left: r.left, width: r.width,
          y: r.top + r.height / 2};
})()"""

SPAN = """(() => { const s = document.querySelector('.tile .tl-span');
  return {at: s.dataset.at, href: s.querySelector('a.tl-download').href,
          ratios: JSON.parse(s.querySelector('.tl-span-numbers').dataset.ratios || 'null'),
          text: s.textContent, hidden: s.hidden}; })()"""


async def until(browser: Browser, expression: str, limit: float) -> Any:
    """Poll a JavaScript expression until it is truthy; returns its value."""
    async with asyncio.timeout(limit):
        while not (value := await browser.evaluate(expression)):
            await asyncio.sleep(0.2)
    return value


async def wait_for(cond: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.05)


def both_live(journal: CoverageJournal) -> bool:
    return set(journal.core.live("lobby")) == {("lobby", "r1"), ("lobby", "r2")}


async def mouse(browser: Browser, kind: str, x: float, y: float) -> None:
    params: dict[str, Any] = {"type": kind, "x": x, "y": y}
    if kind != "mouseMoved":
        params |= {"button": "left", "clickCount": 1}
    await browser.send("Input.dispatchMouseEvent", params)


async def test_timeline_shows_a_frozen_recorder_gap_and_offers_its_minute_as_mp4(
    tmp_path: Path,
) -> None:
    archive = {"journal": str(tmp_path / "coverage.sqlite")}
    async with relay("h264", archive=archive, gop=25, size=(320, 180)) as (sim, proxy):
        journal = proxy.journal
        assert journal is not None
        await wait_for(lambda: both_live(journal))
        await asyncio.sleep(1.0)
        frozen_at = time.time()
        sim.recorders["r1"].freeze()
        await wait_for(lambda: ("lobby", "r1") not in journal.core.live("lobby"))
        await asyncio.sleep(FREEZE)
        sim.recorders["r1"].freeze(False)
        thawed_at = time.time()
        await wait_for(lambda: both_live(journal))
        await asyncio.sleep(0.5)

        origin = proxy.api_url("").rstrip("/")
        async with Browser() as browser:
            await browser.goto(proxy.api_url(f"/?hours={HOURS}"))
            await until(
                browser, "!!document.querySelector('.tl-bar[data-source=r1] .tl-seg.gap')", 10
            )

            def kinds(source: str, kind: str) -> list[tuple[float, float]]:
                return [
                    (parse_time(s), parse_time(e))
                    for k, s, e in bars[source]["segments"]
                    if k == kind
                ]

            # every bar's gaps are the journal's holes in the page's window (a loaded
            # machine may add a short real one to r2: it must be drawn too, by the next
            # refresh at the latest when the journal closed it after the page's fetch)
            for _attempt in range(4):
                bars = {b["source"]: b for b in await browser.evaluate(BARS)}
                assert set(bars) == {"r1", "r2", ""}  # "" is the merged bar
                win = await browser.evaluate(WINDOW)
                ws, we = parse_time(win["start"]), parse_time(win["end"])
                truth = await journal.intervals("lobby", ws, we)
                truth[""] = union(truth.values())
                mismatches = []
                for source, ivs in truth.items():
                    want = [(a[1], b[0]) for a, b in pairwise(ivs)]
                    got = kinds(source, "gap")
                    if len(got) != len(want) or not all(
                        abs(g[0] - w[0]) <= 1.0 and abs(g[1] - w[1]) <= 1.0
                        for g, w in zip(got, want, strict=True)
                    ):
                        mismatches.append((source, got, want))
                if not mismatches:
                    break
                await asyncio.sleep(2.0)
            assert not mismatches, mismatches
            # the freeze is a hole of r1 alone: neither r2 nor the merged bar has it
            (gap,) = [g for g in kinds("r1", "gap") if frozen_at - 1 <= g[0] < thawed_at]
            assert FREEZE - 0.5 <= gap[1] - gap[0] <= FREEZE + 3.0, gap
            for source in ("r2", ""):
                assert not [g for g in kinds(source, "gap") if g[0] < gap[1] and gap[0] < g[1]]
            assert f"{len(kinds('r1', 'gap'))} gap(s)" in bars["r1"]["label"], bars["r1"]
            # a fresh proxy: left of the journal's first record is "no data", not red
            first = min(ivs[0][0] for ivs in truth.values() if ivs)
            for source in bars:
                (nodata,) = kinds(source, "nodata")
                assert abs(nodata[1] - first) <= 1.0, (source, nodata, first)
                assert all(g[0] >= nodata[1] for g in kinds(source, "gap")), source
            assert await browser.evaluate("document.querySelector('#tl-hours').value") == str(HOURS)

            # hover, then click, in the middle of r1's gap
            mid = (gap[0] + gap[1]) / 2
            x = win["left"] + (mid - ws) / (we - ws) * win["width"]
            await mouse(browser, "mouseMoved", x, win["y"])
            hover = await until(
                browser, "document.querySelector('.tile .tl-hover').textContent.trim()", 3
            )
            assert hover.endswith("recorded by r2"), hover
            await mouse(browser, "mousePressed", x, win["y"])
            await mouse(browser, "mouseReleased", x, win["y"])
            await until(browser, "document.querySelector('.tl-span-numbers').dataset.ratios", 5)
            span = await browser.evaluate(SPAN)
            assert not span["hidden"] and "download MP4" in span["text"]
            link = urlsplit(span["href"])
            assert f"{link.scheme}://{link.netloc}" == origin
            assert link.path == "/api/v1/cameras/lobby/recording.mp4"
            query = parse_qs(link.query)
            start, end = parse_time(query["start"][0]), parse_time(query["end"][0])
            at = parse_time(span["at"])
            # the page took the click for a time inside the gap (a pixel is under 1 s here)
            assert abs(at - mid) <= 1.0 and gap[0] <= at <= gap[1], (at, gap)
            assert start <= at <= end and end - start == pytest.approx(60, abs=0.01)
            assert ws <= start and end <= we  # nothing after the window's end (now)
            # the span's own numbers are the API's: r1 missed part of it, r2 and so all did not
            # (the span may begin before the journal: that part counts as uncovered)
            async with aiohttp.ClientSession() as http:
                url = f"/api/v1/cameras/lobby/coverage?{link.query}"
                async with http.get(proxy.api_url(url)) as r:
                    api = (await r.json())["coverage_ratio"]
            assert span["ratios"] == pytest.approx(api, abs=0.02), (span["ratios"], api)
            ratios = span["ratios"]
            assert ratios["r1"] < ratios["r2"] - FREEZE / 120, ratios
            assert ratios["merged"] == pytest.approx(ratios["r2"], abs=0.02), ratios
            assert re.search(r"r1 [\d.]+% · r2 [\d.]+% · all [\d.]+%", span["text"]), span["text"]

            # a drag selects the span between press and release instead
            def x_of(t: float) -> float:
                return win["left"] + (t - ws) / (we - ws) * win["width"]

            both = max(truth["r1"][0][0], truth["r2"][0][0])  # both recorders running
            t_a, t_b = max(gap[0] - 2.0, both + 0.5), min(gap[1] + 2.0, we - 0.5)
            await mouse(browser, "mousePressed", x_of(t_a), win["y"])
            await mouse(browser, "mouseMoved", x_of(t_b), win["y"])
            await mouse(browser, "mouseReleased", x_of(t_b), win["y"])
            await until(browser, "!document.querySelector('.tl-span').dataset.at", 3)
            await until(browser, "document.querySelector('.tl-span-numbers').dataset.ratios", 5)
            span = await browser.evaluate(SPAN)
            query = parse_qs(urlsplit(span["href"]).query)
            start, end = parse_time(query["start"][0]), parse_time(query["end"][0])
            pixel = (we - ws) / win["width"]
            assert abs(start - t_a) <= pixel + 0.01 and abs(end - t_b) <= pixel + 0.01
            async with aiohttp.ClientSession() as http:
                url = f"/api/v1/cameras/lobby/coverage?{urlsplit(span['href']).query}"
                async with http.get(proxy.api_url(url)) as r:
                    api = (await r.json())["coverage_ratio"]
            assert span["ratios"] == pytest.approx(api, abs=0.02), (span["ratios"], api)
            assert span["ratios"]["r1"] < span["ratios"]["r2"] - 0.1, span["ratios"]
            resources = await browser.evaluate(
                "performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert resources and all(u.startswith(origin) for u in resources), resources
            errors = [m for m in browser.console if m.startswith(("exception", "error"))]
            assert not errors, errors


async def test_without_a_journal_the_page_has_no_timeline_and_asks_once() -> None:
    cameras = ("lobby", "gate")
    async with relay("h264", cameras=cameras, gop=25, size=(320, 180)) as (_sim, proxy):
        assert proxy.journal is None
        async with Browser() as browser:
            await browser.goto(proxy.api_url("/"))
            await until(browser, "document.body.dataset.ready === '1'", 10)
            requests = (
                "performance.getEntriesByType('resource')"
                ".filter(e => e.name.includes('/coverage')).length"
            )
            await until(browser, requests, 5)
            await asyncio.sleep(2.5)  # more polls of the cameras: no more coverage requests
            # one camera asks, the answer (503: no journal) holds for every camera
            assert await browser.evaluate(requests) == 1
            assert await browser.evaluate("document.querySelectorAll('.timeline').length") == 0
            assert await browser.evaluate("document.getElementById('tl-choice').hidden")
            assert await browser.evaluate("document.querySelectorAll('.tile .src').length") == 4
            errors = [m for m in browser.console if m.startswith(("exception", "error"))]
            assert not errors, errors
