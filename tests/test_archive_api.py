"""The coverage API's answers to good and bad queries, and the archive config section."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rmfproxy.app import Proxy
from rmfproxy.archive.report import CoverageReport, iso, parse_time
from rmfproxy.config import ConfigError, parse_config, parse_duration

CAMERAS = {"lobby": {"sources": [{"url": "rtsp://127.0.0.1:1/a", "name": "r1"}]}}


async def client_for(proxy: Proxy) -> TestClient[Any, Any]:
    assert proxy.api is not None
    client: TestClient[Any, Any] = TestClient(TestServer(proxy.api.app, host="127.0.0.1", port=0))
    await client.start_server()
    return client


@pytest.fixture
async def journaled(tmp_path: Path) -> AsyncIterator[tuple[Proxy, TestClient[Any, Any]]]:
    """A proxy with a journal (its feeds not started: no source is ever healthy)."""
    proxy = Proxy(parse_config({"cameras": CAMERAS, "archive": {"journal": str(tmp_path / "j")}}))
    assert proxy.journal is not None
    await proxy.journal.start()
    client = await client_for(proxy)
    yield proxy, client
    await client.close()
    await proxy.journal.stop()


async def test_default_window_is_the_last_hour(
    journaled: tuple[Proxy, TestClient[Any, Any]],
) -> None:
    _, client = journaled
    before = time.time()
    r = await client.get("/api/v1/cameras/lobby/coverage")
    assert r.status == 200
    body = await r.json()
    start, end = parse_time(body["start"]), parse_time(body["end"])
    assert end - start == pytest.approx(3600, abs=0.002)
    assert before - 0.002 <= end <= time.time() + 0.002
    assert body["sources"] == {"r1": []}
    assert body["merged"] == []
    assert body["gaps"] == [[body["start"], body["end"]]]
    assert body["coverage_ratio"] == {"r1": 0.0, "merged": 0.0}


async def test_explicit_window_in_any_timezone(
    journaled: tuple[Proxy, TestClient[Any, Any]],
) -> None:
    _, client = journaled
    # '+' left unencoded in a query becomes a space: taken back as '+'
    r = await client.get(
        "/api/v1/cameras/lobby/coverage?start=2026-11-26T10:00:00+01:00&end=2026-11-26T09:30:00Z"
    )
    assert r.status == 200
    body = await r.json()
    assert (body["start"], body["end"]) == (
        "2026-11-26T09:00:00.000+00:00",
        "2026-11-26T09:30:00.000+00:00",
    )


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("start=yesterday", "'start'"),
        ("end=2026-11-26T09:00:00", "'end'"),  # no timezone
        ("start=", "'start'"),
        ("start=2026-11-26T09:00:00Z&end=2026-11-26T09:00:00Z", "'end'"),
        ("start=2026-11-26T10:00:00Z&end=2026-11-26T09:00:00Z", "'end'"),
    ],
)
async def test_bad_parameters_are_a_400_naming_the_parameter(
    journaled: tuple[Proxy, TestClient[Any, Any]], query: str, names: str
) -> None:
    _, client = journaled
    r = await client.get(f"/api/v1/cameras/lobby/coverage?{query}")
    assert r.status == 400
    assert names in (await r.json())["error"]


async def test_unknown_camera_is_a_404(journaled: tuple[Proxy, TestClient[Any, Any]]) -> None:
    _, client = journaled
    r = await client.get("/api/v1/cameras/nope/coverage")
    assert r.status == 404 and "nope" in (await r.json())["error"]


async def test_without_a_journal_the_api_says_how_to_configure_one() -> None:
    proxy = Proxy(parse_config({"cameras": CAMERAS}))
    assert proxy.journal is None
    client = await client_for(proxy)
    try:
        r = await client.get("/api/v1/cameras/lobby/coverage")
        assert r.status == 503
        assert "archive.journal" in (await r.json())["error"]
        r = await client.get("/api/v1/cameras/nope/coverage")
        assert r.status == 404
    finally:
        await client.close()


def test_report_json_and_table() -> None:
    t = 1_800_000_000.0
    report = CoverageReport.build(
        "cam", t, t + 100, {"r1": [(t - 50, t + 40), (t + 60, t + 90)], "r2": [(t + 30, t + 70)]}
    )
    body = report.to_json()
    assert body["sources"]["r1"] == [[iso(t), iso(t + 40)], [iso(t + 60), iso(t + 90)]]
    assert body["merged"] == [[iso(t), iso(t + 90)]]
    assert body["gaps"] == [[iso(t + 90), iso(t + 100)]]
    assert body["coverage_ratio"] == {"r1": 0.7, "r2": 0.4, "merged": 0.9}
    assert iso(t) == "2027-01-15T08:00:00.000+00:00"
    text = report.to_text()
    assert "r1 (70.0%)" in text and "merged (90.0%)" in text and "gaps" in text
    assert CoverageReport.build("cam", t, t + 1, {"r1": []}).to_text().count(" -") == 2


# config -----------------------------------------------------------------------------


def archive(section: dict[str, Any]) -> Any:
    return parse_config({"cameras": CAMERAS, "archive": section}).archive


def test_archive_defaults_and_durations(tmp_path: Path) -> None:
    cfg = archive({})
    assert (cfg.journal, cfg.retention, cfg.heartbeat) == (None, 30 * 86400, 5.0)
    assert archive({"retention": "12h", "journal": str(tmp_path / "j")}).retention == 43200
    assert archive({"retention": 7200}).retention == 7200
    assert [parse_duration(v) for v in ("90", "90s", "15m", "1.5h", "2d", "1w")] == [
        90,
        90,
        900,
        5400,
        172800,
        604800,
    ]


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        ({"retention": "30x"}, "archive.retention", "duration like 30d"),
        ({"retention": -1}, "archive.retention", "positive"),
        ({"retention": "10s"}, "archive.retention", "from 1 minute"),
        ({"retention": True}, "archive.retention", "duration"),
        ({"heartbeat": 0.1}, "archive.heartbeat", "greater than or equal to 1"),
        ({"export_max_seconds": 0}, "archive.export_max_seconds", "greater than 0"),
        ({"journal": "/no/such/dir/j.sqlite"}, "archive.journal", "does not exist"),
        ({"journal": "/"}, "archive.journal", "must be a file path"),
        ({"jurnal": "/tmp/j"}, "archive.jurnal", "unknown field"),
    ],
)
def test_archive_errors_name_the_field(section: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        archive(section)
    assert [(f, m) for f, m in err.value.problems if f == field and message in m], err.value


def test_cli_errors_name_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rmfproxy.cli import main

    plain = tmp_path / "plain.yaml"
    plain.write_text(json.dumps({"cameras": CAMERAS}))
    journaled = tmp_path / "journaled.yaml"
    journaled.write_text(
        json.dumps({"cameras": CAMERAS, "archive": {"journal": str(tmp_path / "j.sqlite")}})
    )
    cases = [
        (plain, "lobby", "1h", "archive.journal is not configured"),
        (journaled, "nope", "1h", "no camera 'nope'"),
        (journaled, "lobby", "last tuesday", "--since 'last tuesday'"),
        (journaled, "lobby", "1h", "no coverage journal at"),  # not written yet
    ]
    for config, camera, since, message in cases:
        argv = ["coverage", "--config", str(config), "--camera", camera, "--since", since]
        assert main(argv) == 1
        assert message in capsys.readouterr().err
