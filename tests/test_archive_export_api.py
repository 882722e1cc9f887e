"""The recording export API's answers to bad queries, spans too long and spans without
footage (no recorder is ever asked: the journal already says there is nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rmfproxy.app import Proxy
from rmfproxy.archive.export import NoFootage
from rmfproxy.config import parse_config
from rmfproxy.ops import api as api_module

CAMERAS = {"lobby": {"sources": [{"url": "rtsp://127.0.0.1:1/a", "name": "r1"}]}}
URL = "/api/v1/cameras/lobby/recording.mp4"


async def client_for(proxy: Proxy) -> TestClient[Any, Any]:
    assert proxy.api is not None
    client: TestClient[Any, Any] = TestClient(TestServer(proxy.api.app, host="127.0.0.1", port=0))
    await client.start_server()
    return client


@pytest.fixture
async def journaled(tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """A proxy with a journal (feeds not started), export limit 10 minutes."""
    archive = {"journal": str(tmp_path / "j"), "export_max_seconds": 600}
    proxy = Proxy(parse_config({"cameras": CAMERAS, "archive": archive}))
    assert proxy.journal is not None
    await proxy.journal.start()
    client = await client_for(proxy)
    yield client
    await client.close()
    await proxy.journal.stop()


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("", "'start' is required"),
        ("start=2026-11-26T09:00:00Z", "'end' is required"),
        ("start=yesterday&end=2026-11-26T09:00:00Z", "'start'"),
        ("start=2026-11-26T09:00:00Z&end=2026-11-26T09:01:00", "'end'"),  # no timezone
        ("start=2026-11-26T09:00:00Z&end=2026-11-26T09:00:00Z", "'end' must be later"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    journaled: TestClient[Any, Any], query: str, names: str
) -> None:
    r = await journaled.get(f"{URL}?{query}")
    assert r.status == 400
    assert names in (await r.json())["error"]


async def test_unknown_camera_is_404(journaled: TestClient[Any, Any]) -> None:
    r = await journaled.get(
        "/api/v1/cameras/nope/recording.mp4?start=2026-11-26T09:00:00Z&end=2026-11-26T09:01:00Z"
    )
    assert r.status == 404 and "nope" in (await r.json())["error"]


async def test_a_span_longer_than_the_limit_is_413(journaled: TestClient[Any, Any]) -> None:
    ok = await journaled.get(f"{URL}?start=2026-11-26T09:00:00Z&end=2026-11-26T09:10:00Z")
    assert ok.status == 404  # exactly the limit: allowed (and empty)
    r = await journaled.get(f"{URL}?start=2026-11-26T09:00:00Z&end=2026-11-26T09:10:00.001Z")
    assert r.status == 413
    assert "at most 600 s" in (await r.json())["error"]


async def test_a_span_without_footage_is_404_with_a_json_error(
    journaled: TestClient[Any, Any],
) -> None:
    r = await journaled.get(f"{URL}?start=2026-11-26T09:00:00Z&end=2026-11-26T09:01:00Z")
    assert r.status == 404
    assert r.content_type == "application/json"
    assert "no recorder covered camera 'lobby'" in (await r.json())["error"]


async def test_without_a_journal_it_is_503(tmp_path: Path) -> None:
    proxy = Proxy(parse_config({"cameras": CAMERAS}))
    client = await client_for(proxy)
    try:
        r = await client.get(f"{URL}?start=2026-11-26T09:00:00Z&end=2026-11-26T09:01:00Z")
        assert r.status == 503 and "archive.journal" in (await r.json())["error"]
    finally:
        await client.close()


async def test_exports_beyond_max_exports_are_503_until_one_ends(
    journaled: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # archive.max_exports defaults to 2: a third export while two run is refused.
    release = asyncio.Event()
    running = 0

    async def slow_export(*args: Any, **kwargs: Any) -> Any:
        nonlocal running
        running += 1
        await release.wait()
        raise NoFootage("nothing (test)")

    monkeypatch.setattr(api_module, "export_recording", slow_export)
    query = f"{URL}?start=2026-11-26T09:00:00Z&end=2026-11-26T09:01:00Z"
    first = [asyncio.create_task(journaled.get(query)) for _ in range(2)]
    async with asyncio.timeout(5):
        while running < 2:
            await asyncio.sleep(0.01)
    refused = await journaled.get(query)
    assert refused.status == 503 and refused.headers["Retry-After"] == "10"
    assert "archive.max_exports" in (await refused.json())["error"]
    release.set()
    assert [(await t).status for t in first] == [404, 404]
    again = await journaled.get(query)
    assert again.status == 404  # a slot is free again
