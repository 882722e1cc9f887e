"""End to end: two simulated recorders frozen in turn, the coverage journal through the API,
the metrics, a proxy restart on the same journal file and the ``rmfproxy coverage`` CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rmfproxy.app import Proxy
from rmfproxy.archive.report import iso, parse_time
from rmfproxy.archive.runner import CoverageJournal
from rmfproxy.cli import main
from rmfproxy.config import load_config
from rmfproxy.sim.runner import SimCluster, SimSpec
from tests.support import wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

FREEZE = 2.0


async def wait_for(cond: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not cond():
            await asyncio.sleep(0.05)


def both_live(journal: CoverageJournal) -> bool:
    return set(journal.core.live("lobby")) == {("lobby", "r1"), ("lobby", "r2")}


async def freeze(sim: SimCluster, journal: CoverageJournal, recorder: str) -> None:
    """Freeze ``recorder`` for FREEZE seconds; return once the journal saw it come back."""
    sim.recorders[recorder].freeze()
    await wait_for(lambda: ("lobby", recorder) not in journal.core.live("lobby"))
    await asyncio.sleep(FREEZE)
    sim.recorders[recorder].freeze(False)
    await wait_for(lambda: both_live(journal))
    await asyncio.sleep(1.0)


async def coverage(http: aiohttp.ClientSession, proxy: Proxy, start: float, end: float) -> Any:
    url = proxy.api_url(f"/api/v1/cameras/lobby/coverage?start={iso(start)}&end={iso(end)}")
    async with http.get(url.replace("+", "%2B")) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def hole(intervals: list[list[str]]) -> tuple[float, float]:
    """The one hole between a source's two intervals."""
    assert len(intervals) == 2, intervals
    return parse_time(intervals[0][1]), parse_time(intervals[1][0])


async def test_coverage_of_two_recorders_frozen_in_turn_survives_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = SimSpec(recorders=[("r1", 0), ("r2", 0)], cameras=["lobby"], codec="h264")
    async with SimCluster(spec) as sim, aiohttp.ClientSession() as http:
        config = tmp_path / "proxy.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "rtsp": {"listen": "127.0.0.1:0"},
                    "api": {"listen": "127.0.0.1:0"},
                    "archive": {"journal": str(tmp_path / "coverage.sqlite"), "retention": "1d"},
                    "cameras": {
                        "lobby": {
                            "sources": [
                                {"url": sim.url("r1", "lobby"), "name": "r1"},
                                {"url": sim.url("r2", "lobby"), "name": "r2"},
                            ]
                        }
                    },
                }
            )
        )
        proxy = Proxy(load_config(config))
        before = time.time()
        await proxy.start()
        started = time.time()
        try:
            journal = proxy.journal
            assert journal is not None
            await wait_ready(proxy, ("lobby",))
            await wait_for(lambda: both_live(journal))
            await asyncio.sleep(0.6)
            start = time.time()
            await asyncio.sleep(0.5)
            with structlog.testing.capture_logs() as logs:
                await freeze(sim, journal, "r1")
                await freeze(sim, journal, "r2")
            end = min(last for _, last in journal.core.live("lobby").values()) - 0.01
            body = await coverage(http, proxy, start, end)

            # each source shows its own hole, about as long as its freeze
            h1, h2 = hole(body["sources"]["r1"]), hole(body["sources"]["r2"])
            for a, b in (h1, h2):
                assert FREEZE - 0.2 <= b - a <= FREEZE + 2.0, (h1, h2)
            assert h1[1] < h2[0]  # r1 was back before r2 froze
            # ... and nothing is missing once both are merged
            assert body["merged"] == [[body["start"], body["end"]]]
            assert body["gaps"] == []
            ratio = body["coverage_ratio"]
            assert ratio["merged"] == 1.0 and ratio["r1"] < 0.9 and ratio["r2"] < 0.9
            closed = [e for e in logs if e["event"] == "archive.coverage_closed"]
            assert [e["source"] for e in closed] == ["r1", "r2"]
            assert all(e["camera"] == "lobby" and e["duration"] > 0 for e in closed)

            await journal.refresh_summary()
            async with http.get(proxy.api_url("/metrics")) as r:
                metrics = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for fam in text_string_to_metric_families(await r.text())
                    for s in fam.samples
                }
            r1_ratio = metrics[
                ("rmfproxy_source_archive_coverage_ratio", (("camera", "lobby"), ("source", "r1")))
            ]
            assert 0.3 < r1_ratio < 1.0
            uncovered = metrics[
                ("rmfproxy_camera_archive_uncovered_seconds", (("camera", "lobby"),))
            ]
            # only the start-up before the first healthy sample (and the last half second)
            # is uncovered: neither hole counts, the other recorder covered it
            first = parse_time((await coverage(http, proxy, before, end))["merged"][0][0])
            assert first - started - 0.1 <= uncovered <= first - before + 1.0, uncovered
        finally:
            await proxy.stop()

        # a new proxy on the same journal file: the history is still there
        again = Proxy(load_config(config))
        await again.start()
        try:
            assert await coverage(http, again, start, end) == body
            # the CLI reads the same file while that proxy runs (a WAL reader)
            argv = ["coverage", "--config", str(config), "--camera", "lobby"]
            argv += ["--since", iso(start), "--until", iso(end)]
            capsys.readouterr()
            assert await asyncio.to_thread(main, [*argv, "--json"]) == 0
            out = capsys.readouterr().out
            # The running proxy's log lines share this process's stdout (structlog prints
            # there when unconfigured): the CLI's JSON document is the part from its "{".
            doc = out[out.index("{\n") if not out.startswith("{") else 0 :]
            assert json.JSONDecoder().raw_decode(doc)[0] == body
            assert await asyncio.to_thread(main, argv) == 0
            table = capsys.readouterr().out
            assert "r1 (" in table and "merged (100.0%)" in table
            assert table.splitlines()[-1].startswith("gaps") and table.rstrip().endswith("-")
        finally:
            await again.stop()
